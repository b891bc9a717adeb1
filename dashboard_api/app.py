"""The FastAPI application factory. Settings come in as arguments, never from import time."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from dashboard_api.state import MonitorState

from .routers import alerts, devices, health, telemetry

STATIC = Path(__file__).parent / "static"


def create_app(state: MonitorState) -> FastAPI:
    app = FastAPI(title="eqmon", version="0.1.0", summary="Equipment and supply monitoring")
    app.state.monitor = state
    app.include_router(devices.router)
    app.include_router(alerts.router)
    app.include_router(health.router)
    app.include_router(telemetry.router)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
