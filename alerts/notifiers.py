"""Synchronous notifiers, called after each alert save (``Service(notifiers=[...])``: tests and
extensions). People are notified through the outbox (alerts/notify/), whose log channel writes
the same lines as ``LogNotifier``."""

from __future__ import annotations

import logging
from typing import Protocol

from eqmon.domain import Alert, AlertState

log = logging.getLogger("eqmon.notify")


class Notifier(Protocol):
    def notify(self, alert: Alert) -> None:
        """Tell people about a raised or resolved alert; must not raise."""


class LogNotifier:
    """Writes each alert change as one line (the console of `eqmon demo` and `eqmon run`)."""

    def notify(self, alert: Alert) -> None:
        if alert.state == AlertState.RESOLVED:
            log.info("RESOLVED %s", alert.message)
        elif alert.state == AlertState.ACTIVE:
            log.warning("NOTIFY %s", alert.message)
