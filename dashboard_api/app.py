"""The FastAPI application factory. Settings come in as arguments, never from import time.

Threads: routes that read or change what the service's event loop writes (devices, alerts,
health, MQTT dead letters) are ``async def``, so they run on the loop that serves the API, which
is the service's own loop (uvicorn runs inside it). Only routes that read the telemetry stores
(history, dead letters, metrics) are plain ``def`` and run in the worker threads.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from dashboard_api.state import MonitorState

from . import errors
from .routers import (
    alerts,
    auth,
    devices,
    events,
    health,
    incidents,
    inventory,
    reports,
    silences,
    simulators,
    telemetry,
)

STATIC = Path(__file__).parent / "static"

# The dashboard's page: its scripts, styles and images come from this app only (no CDN, no inline
# script), and it is never framed.
DASHBOARD_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class DashboardFiles(StaticFiles):
    """The dashboard's assets, revalidated on every load (ETag: a 304 when unchanged), so a
    browser never runs an old module against a newer API after an upgrade."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def create_app(state: MonitorState) -> FastAPI:
    app = FastAPI(title="eqmon", version="0.1.0", summary="Equipment and supply monitoring")
    app.state.monitor = state
    errors.install(app, larger_bodies=inventory.LARGER_BODIES)
    app.include_router(auth.router)
    app.include_router(devices.router)
    app.include_router(alerts.router)
    app.include_router(incidents.router)
    app.include_router(silences.router)
    app.include_router(health.router)
    app.include_router(telemetry.router)
    app.include_router(reports.router)
    app.include_router(simulators.router)
    app.include_router(events.router)
    app.include_router(inventory.router)

    # The web dashboard (docs/dashboard.md): one page, plain ES modules under /static, no build
    # step. The page and its assets need no login; every API call they make does.
    app.mount("/static", DashboardFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=DASHBOARD_HEADERS)

    return app
