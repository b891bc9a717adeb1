"""Who may do what: users with a role, bearer tokens, and the scope each route needs.

* **Roles → scopes** (``ROLE_SCOPES``): ``viewer`` reads; ``coordinator`` also acknowledges and
  resolves alerts, silences, and drives the simulators; ``supply`` also changes stock; ``admin``
  may do everything, and alone manages users and tokens and reads the audit log.
* **Routes** declare their scope with ``need("alerts:write")`` (FastAPI ``Security``, so the
  OpenAPI schema lists it). No token or an unknown/expired/revoked one: 401 with
  ``WWW-Authenticate: Bearer``; a valid token whose role lacks the scope: 403.
* **Tokens** are opaque random strings (``secrets.token_urlsafe(32)``); only their SHA-256 is
  stored (eqmon/db/repos.py ``UserRepo``). A login (OAuth2 password flow,
  ``POST /api/v1/auth/token``) issues a ``session`` token that expires after
  ``SESSION_TTL_S``; an admin issues ``api`` tokens for machines (Prometheus, scripts). Both are
  revocable; a revocation is seen at once by this process (the cache is cleared) and by any
  other within ``CACHE_TTL_S``.
* **Passwords** are hashed with argon2id (argon2-cffi's ``PasswordHasher`` defaults).
* **Login rate limit**: ``LOGIN_FAILURES`` failed attempts per user name, or
  ``LOGIN_FAILURES_PER_CLIENT`` per client address, within ``LOGIN_WINDOW_S`` make further
  attempts answer 429 with ``Retry-After`` until the window has passed (a right password
  included: a guesser learns nothing).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import OAuth2PasswordBearer, SecurityScopes

from eqmon.db.repos import Role, Token, User, UserRepo

SCOPES: dict[str, str] = {
    "devices:read": "devices, their status, readings and history",
    "alerts:read": "alerts, incidents, pending conditions, silences and maintenance windows",
    "alerts:write": "acknowledge and resolve alerts",
    "silences:write": "create and cancel silences and maintenance windows",
    "inventory:read": "supply items, locations, stock levels, pick lists, CSV export",
    "inventory:write": "stock changes: receipts, issues, transfers, counts, CSV import",
    "reports:read": "reports: shift summary, excursions, alert volume",
    "simulators:write": "inject and clear faults in the simulated devices (testing)",
    "metrics:read": "the service's Prometheus metrics and diagnostics",
    "users:admin": "users, roles and API tokens",
    "audit:read": "the audit log",
}
_READ = frozenset({"devices:read", "alerts:read", "inventory:read", "reports:read", "metrics:read"})
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "viewer": _READ,
    "coordinator": _READ | {"alerts:write", "silences:write", "simulators:write"},
    "supply": _READ | {"inventory:write"},
    "admin": frozenset(SCOPES),
}
ROLES: tuple[Role, ...] = ("coordinator", "supply", "viewer", "admin")

SESSION_TTL_S = 8 * 3600.0  # one shift
CACHE_TTL_S = 10.0  # how long a checked token is trusted without asking the database again
LOGIN_WINDOW_S = 60.0
LOGIN_FAILURES = 5
LOGIN_FAILURES_PER_CLIENT = 20
TOKEN_URL = "/api/v1/auth/token"

_hasher = PasswordHasher()
# A hash of a random password: verified against when the user does not exist, so that a wrong
# name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_password() -> str:
    """A password for a new or demo user: 16 URL-safe characters (96 bits)."""
    return secrets.token_urlsafe(12)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user (or machine account) behind the token, its role and scopes."""

    user_id: int
    name: str
    role: str
    scopes: frozenset[str]
    token_id: str
    token_kind: str
    expires_at: float | None


class LoginRefused(Exception):
    pass


class LoginThrottled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after:.0f} s")
        self.retry_after = retry_after


class Authenticator:
    """Logins, tokens and their check on every request. Thread-safe: logins run in worker
    threads (argon2 takes tens of milliseconds), token checks on the event loop."""

    def __init__(
        self,
        users: UserRepo,
        clock: Callable[[], float] = time.time,
        *,
        session_ttl: float = SESSION_TTL_S,
    ) -> None:
        self.users = users
        self.clock = clock
        self.session_ttl = session_ttl
        self._lock = threading.Lock()
        self._cache: dict[
            str, tuple[Principal, float]
        ] = {}  # token hash -> (principal, checked at)
        self._failures: dict[str, deque[float]] = {}  # "user:NAME" / "client:ADDR" -> failure times

    # -- users ----------------------------------------------------------------------------
    def add_user(self, name: str, role: Role, password: str | None) -> User:
        return self.users.add(
            name, role, None if password is None else hash_password(password), now=self.clock()
        )

    # -- login ----------------------------------------------------------------------------
    def login(self, name: str, password: str, client: str) -> tuple[str, Token, User]:
        """A new session token for ``name``; LoginThrottled or LoginRefused otherwise."""
        now = self.clock()
        keys = (f"user:{name.casefold()}", f"client:{client}")
        wait = self._throttled(keys, now)
        if wait > 0:
            raise LoginThrottled(wait)
        user = self.users.get(name)
        ok = verify_password(user.password_hash if user else None, password)
        if not ok or user is None or user.disabled:
            self._fail(keys, now)
            raise LoginRefused("wrong user name or password")
        with self._lock:
            self._failures.pop(keys[0], None)
        return (*self.issue(user, "session"), user)

    def _throttled(self, keys: tuple[str, str], now: float) -> float:
        limits = (LOGIN_FAILURES, LOGIN_FAILURES_PER_CLIENT)
        with self._lock:
            wait = 0.0
            for key, limit in zip(keys, limits, strict=True):
                q = self._failures.get(key)
                if not q:
                    continue
                while q and q[0] <= now - LOGIN_WINDOW_S:
                    q.popleft()
                if len(q) >= limit:
                    wait = max(wait, q[0] + LOGIN_WINDOW_S - now)
            return wait

    def _fail(self, keys: tuple[str, str], now: float) -> None:
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)
            if len(self._failures) > 10_000:  # bounded: forget the stalest keys
                for k in sorted(
                    self._failures, key=lambda k: self._failures[k][-1] if self._failures[k] else 0
                )[:5000]:
                    del self._failures[k]

    # -- tokens ---------------------------------------------------------------------------
    def issue(
        self, user: User, kind: str, *, label: str = "", ttl: float | None = None
    ) -> tuple[str, Token]:
        """A new token for ``user``: (the token itself, shown once; its stored record)."""
        now = self.clock()
        if kind == "session":
            ttl = self.session_ttl if ttl is None else ttl
        token = secrets.token_urlsafe(32)
        record = self.users.add_token(
            user.id, token_hash(token), "session" if kind == "session" else "api", now=now,
            expires_at=None if ttl is None else now + ttl, label=label,
        )  # fmt: skip
        return token, record

    def revoke(self, token_id: str) -> bool:
        done = self.users.revoke(token_id, now=self.clock())
        self.forget()
        return done

    def forget(self) -> None:
        """Drop every cached token check (after a revocation or a user change)."""
        with self._lock:
            self._cache.clear()

    def authenticate(self, token: str) -> Principal | None:
        """The principal behind a valid token; None for an unknown, expired or revoked token or a
        disabled user."""
        h = token_hash(token)
        now = self.clock()
        with self._lock:
            hit = self._cache.get(h)
        if hit is not None:
            p, checked = hit
            if now - checked < CACHE_TTL_S and (p.expires_at is None or now < p.expires_at):
                return p
        found = self.users.by_token(h)
        if found is None:
            return None
        token_rec, user = found
        if not token_rec.valid_at(now) or user.disabled:
            with self._lock:
                self._cache.pop(h, None)
            return None
        p = Principal(
            user.id,
            user.name,
            user.role,
            ROLE_SCOPES[user.role],
            token_rec.id,
            token_rec.kind,
            token_rec.expires_at,
        )
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[h] = (p, now)
        return p


bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, scopes=SCOPES, auto_error=False)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


async def current_principal(
    security_scopes: SecurityScopes, request: Request, token: str | None = Depends(bearer)
) -> Principal:
    auth: Authenticator | None = getattr(request.app.state.monitor, "auth", None)
    if auth is None:
        raise HTTPException(503, "no user database: logins are not available")
    if not token:
        raise _unauthorized("log in first: this needs a bearer token (POST /api/v1/auth/token)")
    principal = auth.authenticate(token)
    if principal is None:
        raise _unauthorized("the token is unknown, expired or revoked: log in again")
    missing = [s for s in security_scopes.scopes if s not in principal.scopes]
    if missing:
        raise HTTPException(
            403, f"the role {principal.role!r} may not do this (it needs the scope {missing[0]!r})"
        )
    return principal


def need(scope: str) -> Any:
    """The dependency of a route that needs ``scope``: ``who: Annotated[Principal, need("alerts:write")]``
    or ``dependencies=[need("devices:read")]``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    return Security(current_principal, scopes=[scope])
