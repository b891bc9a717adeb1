"""The faults each simulated device takes, with their params: what a tester may inject (the API,
the tester page, ``eqmon simulate --control-port``) without reading the code.

One list per family of device, built from the device's live model (its main metric, its drift
rate, its door), as docs/simulators.md tables them. ``clear`` is not listed: every device takes
it, and it takes no params. tests/test_api_ops.py injects every listed fault of every model with
its required params, so a fault listed here is one the models accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from eqmon.config import ADDRESS_SYNTAX

from .modbus_server import EXCEPTION_CODES
from .models import DOOR_MODELS, MODEL_FAULTS, PROTOCOL_FAULTS
from .sensors import SENSOR_FAULTS, SensorModel
from .shelves import LINK_FAULTS, SHELF_MODEL_FAULTS, ShelfModel

ParamType = Literal["number", "integer", "string"]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: ParamType
    description: str
    required: bool = False
    default: float | int | str | None = None  # None: none (or computed, as the description says)
    choices: tuple[float | int | str, ...] | None = None
    example: float | int | str | None = None  # a valid value (tests, the tester page's form)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type, "description": self.description,
            "required": self.required, "default": self.default,
            "choices": None if self.choices is None else list(self.choices), "example": self.example,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    description: str
    params: tuple[Param, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "params": [p.as_dict() for p in self.params]}

    def example_params(self) -> dict[str, Any]:
        """Its required params, each with its example value."""
        return {p.name: p.example for p in self.params if p.required}


# -- equipment (Modbus) ----------------------------------------------------------------------


def equipment_faults(model: Any) -> list[Fault]:
    """The faults of a Modbus equipment model (simulators/models.py): its model faults, then the
    Modbus protocol faults of its unit."""
    metric: str = model.metric
    out = {
        "drift": Fault("drift", f"{metric} moves toward target at rate_per_min, then holds there", (
            Param("target", "number", f"the value of {metric} to drift to", required=True, example=12.0),
            Param("rate_per_min", "number", f"change of {metric} per minute (> 0)", default=model.drift_rate_default),
            Param("metric", "string", "the metric that drifts", default=metric, choices=(metric,)),
        )),
        "stuck": Fault("stuck", f"the {metric} register keeps its current value"),
        "sentinel": Fault("sentinel", f"the {metric} register reads 0x7FFF (sensor failure)"),
        "fault_bit": Fault("fault_bit", "sets a bit of the status register (the model's fault bit by default)", (
            Param("bit", "integer", "status bit 0..15", default=model.fault_bit_default),
        )),
        "door_open": Fault("door_open", "the door is held open until minutes pass or clear", (
            Param("minutes", "number", "how long (> 0); default: until clear"),
        )),
    }  # fmt: skip
    if model.kind not in DOOR_MODELS:
        del out["door_open"]
    protocol = {
        "exception": Fault("exception", "every request to the unit gets this Modbus exception code", (
            Param("code", "integer", "the exception code", default=4, choices=tuple(sorted(EXCEPTION_CODES))),
        )),
        "slow": Fault("slow", "every reply is delayed", (
            Param("delay_s", "number", "seconds (>= 0)", default=5.0),
        )),
        "silence": Fault("silence", "requests are read and never answered"),
        "reset": Fault("reset", "the connection is closed on every request, without a reply"),
        "wrong_tid": Fault("wrong_tid", "replies carry the transaction id + 1"),
        "wrong_function": Fault("wrong_function", "replies carry another function code"),
        "short_reply": Fault("short_reply", "replies are cut short"),
        "reboot": Fault("reboot", "the unit restarts: connections dropped, nothing answered for down_s (clear does not shorten it)", (
            Param("down_s", "number", "seconds (>= 0)", default=3.0),
        )),
        "reject": Fault("reject", "requests touching these registers get exception 0x02", (
            Param("addresses", "string", ADDRESS_SYNTAX, required=True, example="input:10-11"),
        )),
    }  # fmt: skip
    names = [f for f in MODEL_FAULTS if f in out] + [f for f in PROTOCOL_FAULTS if f in protocol]
    return [{**out, **protocol}[n] for n in names]


# -- MQTT devices --------------------------------------------------------------------------

_LINK = {
    "malformed": Fault("malformed", "messages are truncated: not valid JSON"),
    "silence": Fault("silence", "nothing is published (the connection stays up)"),
    "duplicate": Fault("duplicate", "every message is published twice"),
    "out_of_order": Fault("out_of_order", "each message's ts is 1-120 s older than when it is sent"),
    "burst": Fault("burst", "each publish sends factor messages", (
        Param("factor", "number", "messages per publish (>= 1)", default=10),
    )),
    "lastwill": Fault("lastwill", "the connection drops without DISCONNECT: the broker publishes the will (offline)"),
}  # fmt: skip


def link_faults() -> list[Fault]:
    return [_LINK[f] for f in LINK_FAULTS if f != "clear"]


def shelf_faults(model: ShelfModel) -> list[Fault]:
    count = Param("count", "integer", "a whole number of items (>= 0)", required=True, example=10)
    own = {
        "restock": Fault("restock", "the bin is filled to count", (
            Param("count", "integer", "a whole number of items (>= 0)", default=model.par),
        )),
        "take": Fault("take", "count items are taken now", (count,)),
        "set_count": Fault("set_count", "the bin holds exactly count", (count,)),
        "drift": Fault("drift", "the scale's zero creeps toward target grams (recalibrate)", (
            Param("target", "number", "grams", required=True, example=50.0),
            Param("rate_per_min", "number", "grams per minute", default=1.0),
            Param("metric", "string", "the metric that drifts", default="weight_g", choices=("weight_g",)),
        )),
        "foreign": Fault("foreign", "an unrelated object lies in the bin", (
            Param("weight_g", "number", "its weight (> 0)", default=round(2.5 * model.unit_weight, 3)),
        )),
        "negative": Fault("negative", "the bin is lifted off the scale (a negative count)"),
    }  # fmt: skip
    return link_faults() + [own[f] for f in SHELF_MODEL_FAULTS]


def sensor_faults(model: SensorModel) -> list[Fault]:
    metrics = tuple(model.spec)
    own = {
        "drift": Fault("drift", "the metric moves toward target at rate_per_min, then holds there", (
            Param("target", "number", "the value to drift to", required=True, example=float(model.p[f"{metrics[0]}_aim"]) + 5),
            Param("rate_per_min", "number", "change per minute", default=1.0),
            Param("metric", "string", "the metric that drifts", default=metrics[0], choices=metrics),
        )),
        "stuck": Fault("stuck", "every value keeps its current value"),
    }  # fmt: skip
    return link_faults() + [own[f] for f in SENSOR_FAULTS]


def check_params(fault: Fault, params: dict[str, Any]) -> None:
    """ValueError for a param the fault does not take (a typo would otherwise be ignored) or a
    required one missing; the values themselves are the model's to judge."""
    known = {p.name for p in fault.params}
    unknown = sorted(set(params) - known)
    if unknown:
        expected = ", ".join(sorted(known)) if known else "none"
        raise ValueError(f"{fault.name} takes no param {unknown[0]!r}; its params: {expected}")
    missing = [p.name for p in fault.params if p.required and p.name not in params]
    if missing:
        raise ValueError(f"{fault.name} needs {missing[0]}")
