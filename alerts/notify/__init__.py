"""Notifications through a transactional outbox (issue 9).

* ``message.py``    — the ``eqmon.alert.v1`` document, its stable message id and one-line text
* ``routing.py``    — which alert change goes to whom (routes, escalation, repeats, storm
  digests): rows for the ``notification_outbox``, written in the alert's own save
* ``channels.py``   — the senders: e-mail (SMTP), webhook (signed JSON), MQTT (an injected
  publish callable), log
* ``dispatcher.py`` — the asyncio task that sends due rows, retries with backoff, and marks a
  row sent only once the server accepted it

Delivery is at least once: a row is written with the alert change, sent until a server accepts
it, and never sent again once marked sent; every message carries its stable id so that a
receiver can drop the rare duplicate (a crash between the server's acceptance and the mark).
"""

from .channels import DeliveryError, LogSender, Sender, build_senders
from .dispatcher import Dispatcher
from .message import SCHEMA, body_bytes, sign
from .routing import NotificationPlanner

__all__ = [
    "SCHEMA",
    "DeliveryError",
    "Dispatcher",
    "LogSender",
    "NotificationPlanner",
    "Sender",
    "body_bytes",
    "build_senders",
    "sign",
]
