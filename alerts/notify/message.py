"""The notification document (``schema: eqmon.alert.v1``), its stable message id and its text.

The same document is the webhook's JSON body, the MQTT channel's payload and the source of the
e-mail (Subject = ``text``). It is built when the row is queued and stored in the outbox, so a
retry sends exactly the same bytes (``body_bytes``: compact, keys sorted)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from eqmon.domain import Alert

SCHEMA = "eqmon.alert.v1"
SIGNATURE_HEADER = "X-Eqmon-Signature"
MESSAGE_ID_HEADER = "X-Eqmon-Message-Id"

# Events that notify: raised, reopened, escalated (to the next contact), repeated (still
# unacknowledged), resolved; a digest stands for the alerts of a storm.
EVENTS = ("raised", "reopened", "escalated", "repeated", "resolved", "digest")


def one_line(text: str, limit: int = 900) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message_id(subject: str, event: str, channel: str, recipient: str) -> str:
    """Stable: the same alert (``subject``), event (with its number) and recipient always give
    the same id, so queuing again never doubles and receivers can drop a duplicate.
    The recipient is hashed (no address in the id), with the channel id."""
    h = hashlib.sha256(f"{channel}\0{recipient}".encode()).hexdigest()[:16]
    return f"eqmon-{subject}-{event}-{h}"


def alert_fields(a: Alert, location: str | None) -> dict[str, Any]:
    d = a.as_dict()
    d["location"] = location
    if not isinstance(d["value"], int | float | str | bool | None):
        d["value"] = str(d["value"])
    return d


def document(
    *,
    msg_id: str,
    event: str,
    sequence: int,
    text: str,
    site: str,
    channel: str,
    contact: str | None,
    created_at: float,
    alert: dict[str, Any] | None = None,
    alerts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "message_id": msg_id,
        "event": event,
        "sequence": sequence,
        "text": one_line(text),
        "site": site,
        "recipient": {"channel": channel, "contact": contact},
        "created_at": created_at,
        "alert": alert,
    }
    if alerts is not None:
        doc["alerts"] = alerts
    return doc


def body_bytes(doc: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys sorted, UTF-8."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Eqmon-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """What a receiver does (docs/alerts-notifications.md): constant-time comparison."""
    return hmac.compare_digest(sign(secret, body), header)
