"""Shared dependencies: the running service's state, handed to the app by its factory."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from dashboard_api.state import MonitorState


async def get_state(request: Request) -> MonitorState:
    # async: FastAPI would run a plain def dependency in a worker thread for nothing.
    state: MonitorState = request.app.state.monitor
    return state


StateDep = Annotated[MonitorState, Depends(get_state)]
