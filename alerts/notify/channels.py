"""The senders, one per configured channel. ``send(msg)`` returns once the server accepted the
message (SMTP: 250 to DATA; HTTP: 2xx; MQTT: PUBACK at QoS 1) and raises ``DeliveryError``
otherwise: ``permanent`` when trying again cannot help (an address refused, HTTP 4xx other than
408/429). Blocking I/O (smtplib, urllib) runs in a worker thread, never on the event loop.

The MQTT channel does not import paho (only collectors/mqtt.py does): it is handed a
``publish(topic, payload, qos, retain)`` callable, wired in eqmon_app/service.py."""

from __future__ import annotations

import asyncio
import http.client
import inspect
import logging
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol

from eqmon.config import EmailChannel, LogChannel, MqttChannel, Notifications, WebhookChannel
from eqmon.db.repos import OutboxMessage

from .message import MESSAGE_ID_HEADER, SIGNATURE_HEADER, body_bytes, one_line, sign

log = logging.getLogger("eqmon.notify")

USER_AGENT = "eqmon-notify/1"

Publish = Callable[[str, bytes, int, bool], Awaitable[None] | None]


class DeliveryError(Exception):
    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Sender(Protocol):
    channel_id: str

    async def send(self, msg: OutboxMessage) -> None:
        """Deliver one outbox row; return only once the server accepted it."""


# -- e-mail -----------------------------------------------------------------------------------


def email_message(ch: EmailChannel, msg: OutboxMessage) -> EmailMessage:
    doc = msg.payload
    m = EmailMessage()
    m["From"] = ch.from_
    m["To"] = msg.recipient
    m["Subject"] = one_line(str(doc.get("text", "")), 200)
    m["Date"] = formatdate(localtime=False)
    m["Message-ID"] = f"<{msg.message_id}@eqmon>"
    m[MESSAGE_ID_HEADER] = msg.message_id
    a = doc.get("alert") or {}
    lines = [str(doc.get("text", "")), ""]
    for key in ("id", "severity", "state", "device_id", "location", "metric", "value", "started_at"):
        if a.get(key) is not None:
            lines.append(f"{key}: {a[key]}")
    for other in doc.get("alerts") or []:
        lines.append(f"- {other.get('message', '')}")
    lines += ["", f"site: {doc.get('site', '')}", f"event: {doc.get('event', '')}", f"message id: {msg.message_id}"]
    m.set_content("\n".join(lines) + "\n")
    return m


def _smtp_error(exc: BaseException) -> DeliveryError:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [c for c, _ in exc.recipients.values()]
        code = codes[0] if codes else 550
        return DeliveryError(f"recipient refused: {code}", permanent=code >= 500)
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return DeliveryError(f"SMTP {exc.smtp_code} {one_line(text, 200)}", permanent=exc.smtp_code >= 500)
    return DeliveryError(f"{type(exc).__name__}: {one_line(str(exc), 200)}")


class EmailSender:
    def __init__(self, ch: EmailChannel) -> None:
        self.ch = ch
        self.channel_id = ch.id

    def _send_blocking(self, m: EmailMessage) -> None:
        ch = self.ch
        with smtplib.SMTP(ch.host, ch.port, timeout=ch.timeout) as s:
            s.ehlo()
            if ch.starttls:
                ctx = ssl.create_default_context(cafile=ch.ca_file)
                s.starttls(context=ctx)
                s.ehlo()
            if ch.username is not None:
                s.login(ch.username, ch.password() or "")
            refused = s.send_message(m)  # raises unless DATA got 250
            if refused:
                raise smtplib.SMTPRecipientsRefused(refused)

    async def send(self, msg: OutboxMessage) -> None:
        m = email_message(self.ch, msg)
        try:
            await asyncio.to_thread(self._send_blocking, m)
        except ValueError as exc:  # password_env not set
            raise DeliveryError(str(exc)) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise _smtp_error(exc) from None


# -- webhook ----------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer like any other: not followed


_opener = urllib.request.build_opener(_NoRedirect)


class WebhookSender:
    def __init__(self, ch: WebhookChannel) -> None:
        self.ch = ch
        self.channel_id = ch.id

    def request(self, msg: OutboxMessage) -> urllib.request.Request:
        body = body_bytes(msg.payload)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            MESSAGE_ID_HEADER: msg.message_id,
        }
        secret = self.ch.secret()
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        return urllib.request.Request(msg.recipient, data=body, headers=headers, method="POST")

    def _post(self, req: urllib.request.Request) -> int:
        with _opener.open(req, timeout=self.ch.timeout) as resp:
            resp.read(65536)
            return int(resp.status)

    async def send(self, msg: OutboxMessage) -> None:
        try:
            req = self.request(msg)
            status = await asyncio.to_thread(self._post, req)
        except ValueError as exc:  # secret_env not set, a bad URL
            raise DeliveryError(str(exc)) from None
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # HTTPException: an answer that is not HTTP (BadStatusLine, a closed connection)
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"{type(exc).__name__}: {one_line(str(reason), 200)}") from None
        if 200 <= status < 300:
            return
        permanent = 400 <= status < 500 and status not in (408, 429)
        raise DeliveryError(f"HTTP {status}", permanent=permanent)


# -- MQTT -------------------------------------------------------------------------------------


class MqttSender:
    def __init__(self, ch: MqttChannel, publish: Publish) -> None:
        self.ch = ch
        self.channel_id = ch.id
        self._publish = publish

    async def send(self, msg: OutboxMessage) -> None:
        try:
            res = self._publish(msg.recipient, body_bytes(msg.payload), self.ch.qos, self.ch.retain)
            if inspect.isawaitable(res):
                await asyncio.wait_for(res, self.ch.timeout)
        except TimeoutError:
            raise DeliveryError("no PUBACK from the broker in time") from None
        except (OSError, RuntimeError, ValueError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {one_line(str(exc), 200)}") from None


# -- log --------------------------------------------------------------------------------------


class LogSender:
    """One line per notification, as the LogNotifier wrote: NOTIFY for a raised alert (and
    escalations, repeats, digests), RESOLVED for a resolved one."""

    def __init__(self, ch: LogChannel) -> None:
        self.channel_id = ch.id

    async def send(self, msg: OutboxMessage) -> None:
        doc = msg.payload
        alert = doc.get("alert") or {}
        if doc.get("event") == "resolved":
            log.info("RESOLVED %s", alert.get("message", doc.get("text", "")))
        else:
            log.warning("NOTIFY %s", doc.get("text", ""))


def build_senders(settings: Notifications, *, publish: Publish | None = None) -> dict[str, Sender]:
    """One sender per channel; an mqtt channel without ``publish`` (no broker) is left out (its
    rows wait, and the service logs why)."""
    out: dict[str, Sender] = {}
    for ch in settings.channels:
        if isinstance(ch, EmailChannel):
            out[ch.id] = EmailSender(ch)
        elif isinstance(ch, WebhookChannel):
            out[ch.id] = WebhookSender(ch)
        elif isinstance(ch, MqttChannel):
            if publish is not None:
                out[ch.id] = MqttSender(ch, publish)
        else:
            out[ch.id] = LogSender(ch)
    return out
