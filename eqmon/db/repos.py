"""Small typed repositories over the state database's tables: silences, the notification outbox
(alerts/notify/ writes and sends it), the audit log, and users with their tokens (the API's
logins; hashing is dashboard_api/auth.py's: this layer stores what it is given). Each call is one transaction, except
``queue_notifications``, which writes into the caller's (the alert's save); times are Unix
seconds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Connection, Engine, RowMapping, and_, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .engine import writing
from .schema import api_tokens, audit_log, notification_outbox, silences, users

OutboxState = Literal["pending", "sent", "failed"]
SilenceKind = Literal["silence", "maintenance"]
Role = Literal["coordinator", "supply", "viewer", "admin"]
TokenKind = Literal["session", "api"]


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    owner: str
    reason: str
    starts_at: float
    ends_at: float
    created_at: float
    device_id: str | None = None
    location: str | None = None
    rule_id: str | None = None
    cancelled_at: float | None = None
    # "silence": matching alerts are raised and kept but nobody is notified; "maintenance":
    # the matching devices raise nothing (a device or a location; no rule).
    kind: SilenceKind = "silence"

    def in_force(self, at: float) -> bool:
        return self.cancelled_at is None and self.starts_at <= at < self.ends_at

    def as_dict(self) -> dict[str, Any]:
        return _fields(self)

    def matches(self, *, device_id: str, location: str | None, rule_id: str, at: float) -> bool:
        """Whether it silences an alert of that device, location and rule at ``at``: in its
        window, not cancelled, and every matcher it sets equal."""
        return (
            self.in_force(at)
            and (self.device_id is None or self.device_id == device_id)
            and (self.location is None or self.location == location)
            and (self.rule_id is None or self.rule_id == rule_id)
        )


class SilenceRepo:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(
        self,
        *,
        owner: str,
        reason: str,
        starts_at: float,
        ends_at: float,
        device_id: str | None = None,
        location: str | None = None,
        rule_id: str | None = None,
        created_at: float | None = None,
        kind: SilenceKind = "silence",
    ) -> Silence:
        if device_id is None and location is None and rule_id is None:
            raise ValueError("a silence needs a device, a location or a rule to match")
        if kind == "maintenance" and (rule_id is not None or (device_id is None and location is None)):
            raise ValueError("a maintenance window is for a device or a location, not a rule")
        if ends_at <= starts_at:
            raise ValueError("a silence must end after it starts")
        s = Silence(
            id=uuid.uuid4().hex, owner=owner, reason=reason, starts_at=starts_at, ends_at=ends_at,
            created_at=time.time() if created_at is None else created_at,
            device_id=device_id, location=location, rule_id=rule_id, kind=kind,
        )  # fmt: skip
        with writing(self._engine) as conn:
            conn.execute(insert(silences).values(**_fields(s)))
        return s

    def cancel(self, silence_id: str, at: float | None = None) -> bool:
        """Cancel it (kept, with ``cancelled_at``); False when unknown or already cancelled."""
        with writing(self._engine) as conn:
            done = conn.execute(
                update(silences)
                .where(silences.c.id == silence_id, silences.c.cancelled_at.is_(None))
                .values(cancelled_at=time.time() if at is None else at)
            )
            return done.rowcount == 1

    def current(self, now: float) -> list[Silence]:
        """Every silence not cancelled that has not ended by ``now`` (in force or to come)."""
        q = select(silences).where(silences.c.cancelled_at.is_(None), silences.c.ends_at > now)
        with self._engine.connect() as conn:
            return [Silence(**dict(r)) for r in conn.execute(q.order_by(silences.c.starts_at)).mappings()]

    def get(self, silence_id: str) -> Silence | None:
        with self._engine.connect() as conn:
            r = conn.execute(select(silences).where(silences.c.id == silence_id)).mappings().first()
            return None if r is None else Silence(**dict(r))

    def list(self, *, active_at: float | None = None, limit: int = 1000) -> list[Silence]:
        """Silences by start, newest first; with ``active_at`` only those in force then."""
        q = select(silences).order_by(silences.c.starts_at.desc(), silences.c.id).limit(limit)
        if active_at is not None:
            q = q.where(
                silences.c.cancelled_at.is_(None), silences.c.starts_at <= active_at, silences.c.ends_at > active_at
            )
        with self._engine.connect() as conn:
            return [Silence(**dict(r)) for r in conn.execute(q).mappings()]


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    message_id: str  # stable: the same notification is queued (and sent) once
    alert_id: str | None
    channel: str
    recipient: str
    payload: dict[str, Any]
    state: OutboxState
    attempts: int
    next_attempt_at: float
    created_at: float
    last_error: str | None = None
    sent_at: float | None = None


_OUTBOX_KEYS = ("message_id", "alert_id", "channel", "recipient", "payload")


def queue_notifications(conn: Connection, rows: Iterable[Mapping[str, Any]], now: float) -> int:
    """Queue notifications (``message_id``, ``alert_id``, ``channel``, ``recipient``,
    ``payload``) in the caller's transaction; a ``message_id`` already queued is left as it is
    (INSERT … ON CONFLICT DO NOTHING), so queuing again never doubles. Returns how many were new."""
    values = [
        {**{k: r.get(k) for k in _OUTBOX_KEYS}, "state": "pending", "attempts": 0,
         "next_attempt_at": now, "created_at": now}
        for r in rows
    ]  # fmt: skip
    if not values:
        return 0
    if conn.dialect.name == "postgresql":
        stmt: Any = pg_insert(notification_outbox).on_conflict_do_nothing(index_elements=["message_id"])
    elif conn.dialect.name == "sqlite":
        stmt = sqlite_insert(notification_outbox).on_conflict_do_nothing(index_elements=["message_id"])
    else:  # pragma: no cover - eqmon supports SQLite and PostgreSQL
        raise NotImplementedError(conn.dialect.name)
    stmt = stmt.returning(notification_outbox.c.id)  # a row back for each one inserted
    return sum(len(conn.execute(stmt.values(**v)).all()) for v in values)


class OutboxRepo:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add_many(self, rows: Iterable[Mapping[str, Any]], *, now: float) -> int:
        """``queue_notifications`` in a transaction of its own."""
        with writing(self._engine) as conn:
            return queue_notifications(conn, rows, now)

    def get(self, message_id: str) -> OutboxMessage | None:
        with self._engine.connect() as conn:
            r = conn.execute(
                select(notification_outbox).where(notification_outbox.c.message_id == message_id)
            ).mappings().first()
            return None if r is None else _outbox(r)

    def next_due(self) -> float | None:
        """When the earliest pending row is due (None: nothing pending)."""
        with self._engine.connect() as conn:
            v = conn.execute(
                select(func.min(notification_outbox.c.next_attempt_at)).where(notification_outbox.c.state == "pending")
            ).scalar()
            return None if v is None else float(v)

    def pending_stats(self) -> tuple[int, float | None]:
        """How many rows are pending, and when the oldest of them was queued (None: none)."""
        with self._engine.connect() as conn:
            n, oldest = conn.execute(
                select(func.count(), func.min(notification_outbox.c.created_at)).where(
                    notification_outbox.c.state == "pending"
                )
            ).one()
            return int(n), None if oldest is None else float(oldest)

    def add(
        self,
        *,
        message_id: str,
        channel: str,
        recipient: str,
        payload: dict[str, Any],
        alert_id: str | None = None,
        now: float | None = None,
    ) -> bool:
        """Queue a notification; False (nothing queued) when ``message_id`` already is."""
        now = time.time() if now is None else now
        with writing(self._engine) as conn:
            known = conn.execute(
                select(notification_outbox.c.id).where(notification_outbox.c.message_id == message_id)
            ).first()
            if known is not None:
                return False
            conn.execute(
                insert(notification_outbox).values(
                    message_id=message_id, alert_id=alert_id, channel=channel, recipient=recipient,
                    payload=payload, state="pending", attempts=0, next_attempt_at=now, created_at=now,
                )
            )  # fmt: skip
            return True

    def list(self, *, state: OutboxState | None = None, due_at: float | None = None, limit: int = 100) -> list[OutboxMessage]:
        """Oldest first; ``state`` filters; ``due_at``: only pending ones whose time has come."""
        q = select(notification_outbox).order_by(notification_outbox.c.id).limit(limit)
        if state is not None:
            q = q.where(notification_outbox.c.state == state)
        if due_at is not None:
            q = q.where(notification_outbox.c.state == "pending", notification_outbox.c.next_attempt_at <= due_at)
        with self._engine.connect() as conn:
            return [_outbox(r) for r in conn.execute(q).mappings()]

    def mark_sent(self, message_id: str, at: float) -> None:
        """Delivered (the server accepted it): one more attempt, never sent again."""
        with writing(self._engine) as conn:
            conn.execute(
                update(notification_outbox)
                .where(notification_outbox.c.message_id == message_id)
                .values(state="sent", sent_at=at, attempts=notification_outbox.c.attempts + 1, last_error=None)
            )

    def mark_failed(self, message_id: str, error: str, *, retry_at: float | None) -> None:
        """One more failed attempt: tried again at ``retry_at``, or given up (``failed``) if None."""
        with writing(self._engine) as conn:
            conn.execute(
                update(notification_outbox)
                .where(notification_outbox.c.message_id == message_id)
                .values(
                    attempts=notification_outbox.c.attempts + 1,
                    last_error=error,
                    state="failed" if retry_at is None else "pending",
                    **({} if retry_at is None else {"next_attempt_at": retry_at}),
                )
            )

    def _set(self, message_id: str, **values: Any) -> None:
        with writing(self._engine) as conn:
            conn.execute(
                update(notification_outbox).where(notification_outbox.c.message_id == message_id).values(**values)
            )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    ts: float
    actor: str
    action: str  # e.g. alert.acknowledge, silence.add, inventory.adjust
    subject: str  # what it was done to, e.g. alert:4f2a…, device:fridge-1
    detail: dict[str, Any] = field(default_factory=dict)


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, *, actor: str, action: str, subject: str, detail: dict[str, Any] | None = None, ts: float | None = None) -> None:
        with writing(self._engine) as conn:
            conn.execute(
                insert(audit_log).values(
                    ts=time.time() if ts is None else ts, actor=actor, action=action, subject=subject,
                    detail=detail or {},
                )
            )  # fmt: skip

    def list(
        self, *, subject: str | None = None, since: float | None = None, limit: int = 200,
        actor: str | None = None, action: str | None = None, before: tuple[float, int] | None = None,
    ) -> list[AuditEntry]:
        """Newest first (by ``ts``, then ``id``); ``before``: only entries after ``(ts, id)`` in
        that order (the next page of a keyset pagination)."""
        q = select(audit_log).order_by(audit_log.c.ts.desc(), audit_log.c.id.desc()).limit(limit)
        conds = []
        if subject is not None:
            conds.append(audit_log.c.subject == subject)
        if since is not None:
            conds.append(audit_log.c.ts >= since)
        if actor is not None:
            conds.append(audit_log.c.actor == actor)
        if action is not None:
            conds.append(audit_log.c.action == action)
        if before is not None:
            ts, id_ = before
            conds.append(or_(audit_log.c.ts < ts, and_(audit_log.c.ts == ts, audit_log.c.id < id_)))
        if conds:
            q = q.where(and_(*conds))
        with self._engine.connect() as conn:
            return [AuditEntry(**dict(r)) for r in conn.execute(q).mappings()]


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: Role
    password_hash: str | None
    created_at: float
    disabled: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "disabled": self.disabled,
        }


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    user_id: int
    kind: TokenKind
    label: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def valid_at(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in Token.__dataclass_fields__}


class UserExists(ValueError):
    pass


class UserRepo:
    """Users and their bearer tokens. Tokens are looked up by their SHA-256 (``token_hash``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(
        self, name: str, role: Role, password_hash: str | None, *, now: float | None = None
    ) -> User:
        with writing(self._engine) as conn:
            if conn.execute(select(users.c.id).where(users.c.name == name)).first() is not None:
                raise UserExists(f"user {name!r} exists")
            ts = time.time() if now is None else now
            pk = conn.execute(
                insert(users).values(name=name, role=role, password_hash=password_hash, created_at=ts, disabled=False)
            ).inserted_primary_key  # fmt: skip
            assert pk is not None
        return User(int(pk[0]), name, role, password_hash, ts, False)

    def get(self, name: str) -> User | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).mappings().first()
        return None if row is None else _user(row)

    def get_id(self, user_id: int) -> User | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.id == user_id)).mappings().first()
        return None if row is None else _user(row)

    def all(self) -> list[User]:
        with self._engine.connect() as conn:
            return [_user(r) for r in conn.execute(select(users).order_by(users.c.name)).mappings()]

    def update(
        self,
        name: str,
        *,
        role: Role | None = None,
        password_hash: str | None = None,
        disabled: bool | None = None,
    ) -> User | None:
        """Change a user; disabling one (or changing its role or password) revokes its session
        tokens. None if there is no such user."""
        values: dict[str, Any] = {}
        if role is not None:
            values["role"] = role
        if password_hash is not None:
            values["password_hash"] = password_hash
        if disabled is not None:
            values["disabled"] = disabled
        with writing(self._engine) as conn:
            row = conn.execute(select(users).where(users.c.name == name)).mappings().first()
            if row is None:
                return None
            if values:
                conn.execute(update(users).where(users.c.id == row["id"]).values(**values))
                conn.execute(
                    update(api_tokens)
                    .where(api_tokens.c.user_id == row["id"], api_tokens.c.kind == "session", api_tokens.c.revoked_at.is_(None))
                    .values(revoked_at=time.time())
                )  # fmt: skip
            row = conn.execute(select(users).where(users.c.id == row["id"])).mappings().one()
        return _user(row)

    def add_token(
        self,
        user_id: int,
        token_hash: str,
        kind: TokenKind,
        *,
        now: float,
        expires_at: float | None,
        label: str = "",
    ) -> Token:
        tid = uuid.uuid4().hex
        with writing(self._engine) as conn:
            conn.execute(
                insert(api_tokens).values(
                    id=tid, user_id=user_id, kind=kind, token_hash=token_hash, label=label,
                    created_at=now, expires_at=expires_at, revoked_at=None,
                )
            )  # fmt: skip
        return Token(tid, user_id, kind, label, now, expires_at, None)

    def by_token(self, token_hash: str) -> tuple[Token, User] | None:
        """The token with this hash and its user (valid or not: the caller checks)."""
        q = select(
            api_tokens,
            users.c.name,
            users.c.role,
            users.c.password_hash,
            users.c.disabled,
            users.c.created_at.label("user_created_at"),
        )
        q = q.join(users, users.c.id == api_tokens.c.user_id).where(
            api_tokens.c.token_hash == token_hash
        )
        with self._engine.connect() as conn:
            r = conn.execute(q).mappings().first()
        if r is None:
            return None
        token = Token(
            r["id"],
            r["user_id"],
            r["kind"],
            r["label"],
            r["created_at"],
            r["expires_at"],
            r["revoked_at"],
        )
        user = User(
            r["user_id"],
            r["name"],
            r["role"],
            r["password_hash"],
            r["user_created_at"],
            bool(r["disabled"]),
        )
        return token, user

    def tokens(self, user_id: int | None = None, *, include_revoked: bool = False) -> list[Token]:
        q = select(api_tokens).order_by(api_tokens.c.created_at)
        if user_id is not None:
            q = q.where(api_tokens.c.user_id == user_id)
        if not include_revoked:
            q = q.where(api_tokens.c.revoked_at.is_(None))
        with self._engine.connect() as conn:
            return [
                Token(
                    r["id"],
                    r["user_id"],
                    r["kind"],
                    r["label"],
                    r["created_at"],
                    r["expires_at"],
                    r["revoked_at"],
                )
                for r in conn.execute(q).mappings()
            ]

    def revoke(self, token_id: str, *, now: float | None = None) -> bool:
        """Revoke a token; False if there is no such token or it was revoked already."""
        with writing(self._engine) as conn:
            n = conn.execute(
                update(api_tokens)
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time() if now is None else now)
            ).rowcount
        return bool(n)


def _user(r: RowMapping) -> User:
    return User(
        r["id"], r["name"], r["role"], r["password_hash"], r["created_at"], bool(r["disabled"])
    )


def _fields(s: Silence) -> dict[str, Any]:
    return {f: getattr(s, f) for f in Silence.__dataclass_fields__}


def _outbox(r: RowMapping) -> OutboxMessage:
    return OutboxMessage(**{k: r[k] for k in OutboxMessage.__dataclass_fields__})


__all__ = ["AuditEntry", "AuditLog", "OutboxMessage", "OutboxRepo", "Silence", "SilenceRepo"]
