"""The simulated devices, while simulators run in the service's process (``eqmon demo``): list
them with their model, active faults and the faults each takes; inject a fault; clear.

The control is ``MonitorState.simulators`` (state.py ``SimulatorControl``: simulators/control.py
``FaultControl`` in the demo). Without simulators the list is empty and injecting or clearing
answers 404. Every route is ``async def``: the simulators run on the service's event loop.
Injections and clears are audited (``simulator.inject``, ``simulator.clear``)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
)

from ..auth import Principal, need
from ..deps import StateDep
from ..errors import BODY_ERRORS, ERROR_RESPONSES, NOT_FOUND, show
from ..pagination import Cursor, Limit, Page, paginate
from ..state import SimulatorControl

router = APIRouter(prefix="/api/v1/simulators", tags=["simulators"], responses=ERROR_RESPONSES)

NO_SIMULATORS = "no simulators run in this service (they run with `eqmon demo`)"


class FaultParamOut(BaseModel):
    name: str
    type: Literal["number", "integer", "string"]
    description: str
    required: bool
    default: float | int | str | None = Field(description="used when the param is left out; null: none")
    choices: list[float | int | str] | None = Field(description="the only values allowed; null: any")
    example: float | int | str | None = Field(description="a valid value, for a required param")


class FaultOut(BaseModel):
    name: str
    description: str
    params: list[FaultParamOut]


class SimulatedDeviceOut(BaseModel):
    id: str
    name: str
    location: str
    protocol: str
    model: str = Field(description="the simulator model, e.g. medication_refrigerator, smart_shelf")
    active_faults: list[str] = Field(description="the faults in force, as people read them")
    faults: list[FaultOut] = Field(description="the faults it takes (`clear`, taken by all, not listed)")


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


ParamValue = StrictInt | Annotated[StrictFloat, AfterValidator(_finite)] | Annotated[StrictStr, StringConstraints(max_length=100)]
ParamName = Annotated[str, StringConstraints(min_length=1, max_length=50, pattern=r"^[a-z_]+$")]


class FaultRequest(BaseModel):
    fault: str = Field(
        min_length=1, max_length=50, pattern=r"^[a-z_]+$",
        description="one of the device's `faults` (GET /api/v1/simulators), or `clear`",
    )  # fmt: skip
    params: dict[ParamName, ParamValue] = Field(
        default_factory=dict, max_length=20, description="the fault's params (numbers or text)"
    )


def _control(state: StateDep) -> SimulatorControl:
    if state.simulators is None:
        raise HTTPException(404, NO_SIMULATORS)
    return state.simulators


class _BadFault(HTTPException):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(422, message)
        self.field = field  # the error body's field (errors.py)


@router.get("", response_model=Page[SimulatedDeviceOut])
async def list_simulators(
    state: StateDep,
    who: Annotated[Principal, need("devices:read")],
    model: str | None = Query(None, max_length=100, description="only devices of this simulator model"),
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The simulated devices, by id; an empty list when no simulators run in this service."""
    devices = [] if state.simulators is None else state.simulators.devices()
    if model is not None:
        devices = [d for d in devices if d["model"] == model]
    return paginate(devices, lambda d: (d["id"],), limit, cursor)


def _apply(state: StateDep, who: Principal, device_id: str, fault: str, params: dict[str, Any]) -> dict[str, Any]:
    control = _control(state)
    try:
        device = control.clear(device_id) if fault == "clear" else control.inject(device_id, fault, params)
    except KeyError as exc:  # the simulators' reason (no simulator section, no broker …)
        raise HTTPException(404, str(exc.args[0]) if exc.args else f"{show(device_id)!r} is not simulated") from None
    except ValueError as exc:
        raise _BadFault(str(exc), f"body.{getattr(exc, 'field', 'params')}") from None
    if fault == "clear":
        state.audit("simulator.clear", f"device:{device_id}", {}, who.name)
    else:
        state.audit("simulator.inject", f"device:{device_id}", {"fault": fault, "params": params}, who.name)
    return device


@router.post(
    "/{device_id}/faults", response_model=SimulatedDeviceOut, responses={**NOT_FOUND, **BODY_ERRORS}
)
async def inject_fault(
    body: FaultRequest,
    state: StateDep,
    who: Annotated[Principal, need("simulators:write")],
    device_id: str = Path(max_length=64, description="a device id of the site file"),
) -> dict[str, Any]:
    """Inject a fault now (it stays until cleared; `clear` ends them all). 404 for a device that
    is not simulated or without simulators; 422 naming `body.fault` or `body.params` for a fault
    the device does not take or params it refuses. The device as it is after."""
    if body.fault == "clear" and body.params:
        raise _BadFault("clear takes no params", "body.params")
    return _apply(state, who, device_id, body.fault, dict(body.params))


@router.delete("/{device_id}/faults", response_model=SimulatedDeviceOut, responses=NOT_FOUND)
async def clear_faults(
    state: StateDep,
    who: Annotated[Principal, need("simulators:write")],
    device_id: str = Path(max_length=64, description="a device id of the site file"),
) -> dict[str, Any]:
    """End every fault of a simulated device (a door held open is shut; values return to normal
    gradually). The device as it is after."""
    return _apply(state, who, device_id, "clear", {})
