"""Logins, users, API tokens and the audit log.

``POST /api/v1/auth/token`` is the OAuth2 password flow as FastAPI documents it (a form with
``username`` and ``password``; the answer's ``access_token`` goes into ``Authorization: Bearer``).
Users and tokens are an admin's (scope ``users:admin``); anyone logged in may read who they are
and log out (revoke their own token). The routes touching argon2 or the database are plain
``def``: they run in worker threads, never on the service's loop."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from eqmon.db.repos import Role, UserExists

from ..auth import (
    ROLE_SCOPES,
    LoginRefused,
    LoginThrottled,
    Principal,
    hash_password,
    need,
    new_password,
)
from ..deps import StateDep
from ..errors import BODY_ERRORS, ERROR_RESPONSES, NOT_FOUND, show
from ..models import ErrorResponse
from ..pagination import (
    DEFAULT_LIMIT,
    Cursor,
    CursorError,
    Limit,
    Page,
    decode_cursor,
    encode_cursor,
)
from .alerts import _valid_text

router = APIRouter(prefix="/api/v1", tags=["users"], responses=ERROR_RESPONSES)

UserName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[^\s/][^/]*$"
    ),
    AfterValidator(_valid_text),
]
Password = Annotated[
    str, StringConstraints(min_length=12, max_length=200), AfterValidator(_valid_text)
]
Label = Annotated[str, StringConstraints(max_length=100), AfterValidator(_valid_text)]


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: float | None = Field(description="seconds until it expires; null: until revoked")
    name: str
    role: Role
    scopes: list[str]


class MeOut(BaseModel):
    name: str
    role: Role
    scopes: list[str]
    token_id: str
    token_kind: str
    expires_at: float | None


class UserOut(BaseModel):
    id: int
    name: str
    role: Role
    created_at: float
    disabled: bool


class UserCreate(BaseModel):
    name: UserName = Field(description="a member of staff or a machine account (no patient data)")
    role: Role
    password: Password | None = Field(
        default=None, description="at least 12 characters; default: one is made and returned once"
    )


class UserCreated(UserOut):
    password: str | None = Field(
        description="the password made for the user (shown only now); null when one was given"
    )


class UserChange(BaseModel):
    role: Role | None = None
    disabled: bool | None = None
    password: Password | None = None


class TokenCreate(BaseModel):
    user: UserName
    label: Label = Field(default="", description="what it is for, e.g. prometheus")
    ttl_days: float | None = Field(
        default=None, gt=0, le=3650, description="default: until revoked"
    )


class TokenInfo(BaseModel):
    id: str
    user_id: int
    kind: str
    label: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None


class TokenCreated(TokenInfo):
    token: str = Field(description="the token itself: shown only now")


class AuditOut(BaseModel):
    id: int
    ts: float
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]


THROTTLED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorResponse,
        "description": "Too many failed logins: wait Retry-After seconds",
    },
}


def _auth(state: StateDep) -> Any:
    if state.auth is None:
        raise HTTPException(503, "no user database: logins are not available")
    return state.auth


@router.post(
    "/auth/token", response_model=TokenOut, tags=["auth"], responses={**THROTTLED, **BODY_ERRORS}
)
def login(
    request: Request, state: StateDep, form: Annotated[OAuth2PasswordRequestForm, Depends()]
) -> Any:
    """Log in with a user name and password (OAuth2 password flow): a session token that
    expires after one shift (8 h)."""
    auth = _auth(state)
    client = request.client.host if request.client else "unknown"
    try:
        token, record, user = auth.login(form.username[:200], form.password[:200], client)
    except LoginThrottled as e:
        raise HTTPException(
            429, str(e), headers={"Retry-After": str(max(1, round(e.retry_after)))}
        ) from None
    except LoginRefused as e:
        raise HTTPException(401, str(e), headers={"WWW-Authenticate": "Bearer"}) from None
    return {
        "access_token": token, "token_type": "bearer",
        "expires_in": None if record.expires_at is None else round(record.expires_at - record.created_at, 1),
        "name": user.name, "role": user.role, "scopes": sorted(ROLE_SCOPES[user.role]),
    }  # fmt: skip


@router.get("/auth/me", response_model=MeOut, tags=["auth"])
async def me(who: Annotated[Principal, need("devices:read")]) -> dict[str, Any]:
    """Who the token belongs to, with its role and scopes."""
    return {
        "name": who.name, "role": who.role, "scopes": sorted(who.scopes), "token_id": who.token_id,
        "token_kind": who.token_kind, "expires_at": who.expires_at,
    }  # fmt: skip


@router.post("/auth/logout", status_code=204, tags=["auth"])
def logout(state: StateDep, who: Annotated[Principal, need("devices:read")]) -> Response:
    """Revoke the token this request carries."""
    _auth(state).revoke(who.token_id)
    return Response(status_code=204)


@router.get("/users", response_model=list[UserOut])
def list_users(
    state: StateDep, who: Annotated[Principal, need("users:admin")]
) -> list[dict[str, Any]]:
    return [u.as_dict() for u in _auth(state).users.all()]


@router.post(
    "/users",
    response_model=UserCreated,
    status_code=201,
    responses={**BODY_ERRORS, 409: {"model": ErrorResponse, "description": "The user exists"}},
)
def create_user(
    body: UserCreate, state: StateDep, who: Annotated[Principal, need("users:admin")]
) -> dict[str, Any]:
    auth = _auth(state)
    password = body.password or new_password()
    try:
        user = auth.add_user(body.name, body.role, password)
    except UserExists:
        raise HTTPException(409, f"user {show(body.name)!r} exists") from None
    state.audit("user.create", f"user:{user.name}", {"role": user.role}, who.name)
    return {**user.as_dict(), "password": None if body.password else password}


@router.patch("/users/{name}", response_model=UserOut, responses={**NOT_FOUND, **BODY_ERRORS})
def change_user(
    body: UserChange,
    state: StateDep,
    who: Annotated[Principal, need("users:admin")],
    name: str = Path(max_length=100),
) -> dict[str, Any]:
    """Change a user's role, password or disable it; its session tokens are revoked."""
    auth = _auth(state)
    user = auth.users.update(
        name, role=body.role, disabled=body.disabled,
        password_hash=None if body.password is None else hash_password(body.password),
    )  # fmt: skip
    if user is None:
        raise HTTPException(404, f"no user {show(name)!r}")
    auth.forget()
    detail = body.model_dump(exclude_none=True, exclude={"password"})
    if body.password is not None:
        detail["password"] = "changed"
    state.audit("user.change", f"user:{user.name}", detail, who.name)
    return user.as_dict()


@router.get("/tokens", response_model=list[TokenInfo])
def list_tokens(
    state: StateDep, who: Annotated[Principal, need("users:admin")], include_revoked: bool = False
) -> list[dict[str, Any]]:
    return [t.as_dict() for t in _auth(state).users.tokens(include_revoked=include_revoked)]


@router.post(
    "/tokens", response_model=TokenCreated, status_code=201, responses={**NOT_FOUND, **BODY_ERRORS}
)
def create_token(
    body: TokenCreate, state: StateDep, who: Annotated[Principal, need("users:admin")]
) -> dict[str, Any]:
    """An API token for a machine account (or any user): it has that user's role."""
    auth = _auth(state)
    user = auth.users.get(body.user)
    if user is None:
        raise HTTPException(404, f"no user {show(body.user)!r}")
    token, record = auth.issue(
        user, "api", label=body.label, ttl=None if body.ttl_days is None else body.ttl_days * 86400
    )
    state.audit(
        "token.create", f"user:{user.name}", {"token_id": record.id, "label": body.label}, who.name
    )
    return {**record.as_dict(), "token": token}


@router.delete("/tokens/{token_id}", status_code=204, responses=NOT_FOUND)
def revoke_token(
    state: StateDep,
    who: Annotated[Principal, need("users:admin")],
    token_id: str = Path(max_length=64),
) -> Response:
    if not _auth(state).revoke(token_id):
        raise HTTPException(404, f"no unrevoked token {show(token_id)!r}")
    state.audit("token.revoke", f"token:{token_id}", {}, who.name)
    return Response(status_code=204)


@router.get("/audit", response_model=Page[AuditOut], tags=["audit"])
def audit_log(
    state: StateDep,
    who: Annotated[Principal, need("audit:read")],
    actor: str | None = Query(None, max_length=100, description="only what this user did"),
    action: str | None = Query(None, max_length=100, description="only this action, e.g. alert.acknowledge"),
    subject: str | None = Query(None, max_length=200, description="only about this, e.g. alert:ID, user:NAME"),
    since: float | None = Query(None, ge=0, le=253402300799, allow_inf_nan=False, description="Unix seconds"),
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Who did what, newest first: acknowledgements, resolutions, silences, stock changes,
    users and tokens, simulator faults."""
    after = decode_cursor(cursor)
    before: tuple[float, int] | None = None
    if after is not None:
        if len(after) != 2 or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in after) \
                or not isinstance(after[1], int) or not math.isfinite(after[0]):  # fmt: skip
            raise CursorError()
        before = (float(after[0]), after[1])
    if state.audit_log is None:
        return {"items": [], "next_cursor": None}
    entries = state.audit_log.list(
        actor=actor, action=action, subject=subject, since=since, limit=limit + 1, before=before
    )
    page = entries[:limit]
    more = len(entries) > limit
    return {
        "items": [
            {"id": e.id, "ts": e.ts, "actor": e.actor, "action": e.action, "subject": e.subject, "detail": e.detail}
            for e in page
        ],
        "next_cursor": encode_cursor([page[-1].ts, page[-1].id]) if more and page else None,
    }
