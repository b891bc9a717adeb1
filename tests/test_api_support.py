"""Helpers for the API tests (tests/test_api_*.py); no tests of its own.

``api_on_built_service`` builds the real service for the example site (Modbus devices only, no
simulators: they stay unknown) without starting it, and calls its API in-process through
httpx's ASGI transport on the service's own event loop, as uvicorn would. ``running_service``
starts the service for real (uvicorn inside the service's loop) for tests of the served path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from dashboard_api.app import create_app
from dashboard_api.state import MonitorState
from eqmon.config import Site
from eqmon_app.service import Service
from tests.sitefiles import example_on_free_ports, site


def modbus_only_site() -> Site:
    data = example_on_free_ports()
    data["devices"] = [d for d in data["devices"] if d["protocol"] == "modbus"]
    return site(data)


@dataclass
class InProcessApi:
    service: Service
    app: FastAPI
    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@contextlib.contextmanager
def api_on_built_service(tmp_path: Path, *, site: Site | None = None, **kwargs: Any) -> Iterator[InProcessApi]:
    """The API of a built (not started) service, on an event loop of its own; the service is
    stopped and closed on exit. ``site``: default ``modbus_only_site()``."""
    loop = asyncio.new_event_loop()

    async def build() -> Service:
        return Service(site or modbus_only_site(), data_dir=tmp_path, **kwargs)

    service = loop.run_until_complete(build())
    app = create_app(service.state)
    # Logged in as an admin (every scope) unless a test passes other headers (auth_headers).
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://eqmon.test",
        headers=auth_headers(service.state, "admin"),
    )
    try:
        yield InProcessApi(service, app, loop, client)
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(service.stop())
        loop.close()


def auth_headers(state: MonitorState, role: str, name: str | None = None) -> dict[str, str]:
    """An ``Authorization`` header for a user with ``role`` (made, without a password, if
    missing: named ``test-<role>`` by default), with a new session token."""
    auth = state.auth
    name = name or f"test-{role}"
    user = auth.users.get(name) or auth.add_user(name, role, None)
    token, _ = auth.issue(user, "session")
    return {"Authorization": f"Bearer {token}"}


NO_AUTH = {"Authorization": ""}  # request headers that drop the client's default token


def api_client(service: Service, role: str = "admin", name: str | None = None) -> httpx.AsyncClient:
    """A client of a running service's API (served by uvicorn), logged in with ``role`` (as the
    user ``name``, default ``test-<role>``)."""
    return httpx.AsyncClient(base_url=service.api_url, headers=auth_headers(service.state, role, name))


@contextlib.asynccontextmanager
async def running_service(tmp_path: Path) -> AsyncIterator[Service]:
    service = Service(modbus_only_site(), data_dir=tmp_path)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
