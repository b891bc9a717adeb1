"""Log noise: while a device is silent or gone, eqmon logs one line per change of its state and
pymodbus logs nothing (no ERROR per unanswered request, no hex dumps) unless its logger was set
to INFO or lower (``eqmon -v``). Real polls over loopback: a simulator that goes silent, then
away (connection refused), then comes back — a minute of 2-second polls, at short intervals."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pymodbus
import pytest

from collectors.errors import CollectorError
from collectors.health import DeviceHealth
from collectors.modbus import ModbusCollector
from eqmon.config import ModbusDevice
from eqmon.domain import DeviceStatusEvent
from simulators.modbus_server import ModbusServer

POLLS = 30  # a minute of polls at the demo's 2 s interval


def device(port: int) -> ModbusDevice:
    return ModbusDevice.model_validate(
        {
            "id": "fridge-1", "kind": "medication_refrigerator", "protocol": "modbus",
            "host": "127.0.0.1", "port": port, "interval": 0.5, "timeout": 0.03, "offline_after": 3,
            "retries": 1, "backoff": 0.005,
            "registers": [
                {"name": "temperature_c", "address": 0, "type": "input", "data_type": "int16", "scale": 0.1},
                {"name": "setpoint_c", "address": 0, "type": "holding", "data_type": "int16", "scale": 0.1},
            ],
        }  # fmt: skip
    )


@pytest.fixture
def pymodbus_logging() -> Iterator[None]:
    """Restore the levels and handlers of pymodbus's loggers after the test."""
    names = ["pymodbus", *(n for n in logging.Logger.manager.loggerDict if n.startswith("pymodbus."))]
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in names}
    handler_levels = {h: h.level for _, hs in saved.values() for h in hs}
    try:
        yield
    finally:
        for n in ["pymodbus", *(n for n in logging.Logger.manager.loggerDict if n.startswith("pymodbus."))]:
            lg = logging.getLogger(n)
            level, handlers = saved.get(n, (logging.NOTSET, []))
            lg.setLevel(level)
            for h in list(lg.handlers):
                if h not in handlers:
                    lg.removeHandler(h)
        for h, level in handler_levels.items():
            h.setLevel(level)


async def _outage() -> list[DeviceStatusEvent]:
    """A healthy poll, POLLS silent polls, POLLS polls with nothing listening, one healthy poll."""
    server = ModbusServer()
    bank = server.add_unit(1)
    bank.input[0] = 33
    port = await server.start()
    events: list[DeviceStatusEvent] = []
    health = DeviceHealth("fridge-1", offline_after=3, emit=events.append)
    collector = ModbusCollector([device(port)], lambda _: health, clock=time.time)
    poller = collector.pollers[0]
    try:
        await poller.poll()
        bank.faults.silent = True
        for _ in range(POLLS):
            with pytest.raises(CollectorError):
                await poller.poll()
        await server.stop()
        for _ in range(POLLS):
            with pytest.raises(CollectorError):
                await poller.poll()
        server = ModbusServer({1: bank})
        bank.faults.clear()
        await server.start(port=port)
        assert {r.metric: r.value for r in await poller.poll()} == {"temperature_c": 3.3, "setpoint_c": 0.0}
    finally:
        collector.close()
        await server.stop()
    return events


def _split(records: list[logging.LogRecord]) -> tuple[list[str], list[str]]:
    ours = [r.getMessage() for r in records if r.name.startswith(("eqmon", "collectors"))]
    theirs = [r.getMessage() for r in records if r.name.startswith("pymodbus")]
    return ours, theirs


@pytest.mark.parametrize("configured", ["library", "eqmon run"])
def test_one_line_per_change_of_state_and_no_pymodbus_lines(
    configured: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], pymodbus_logging: None
) -> None:
    if configured == "eqmon run":  # what `eqmon run` sets up without -v
        logging.getLogger("pymodbus").setLevel(logging.WARNING)
    # pymodbus's own debugging set-up (a stream handler on stderr, DEBUG) is kept quiet too
    pymodbus.pymodbus_apply_logging_config(logging.DEBUG)
    caplog.set_level(logging.DEBUG)  # everything that reaches the root logger is captured
    events = asyncio.run(_outage())
    ours, theirs = _split(caplog.records)
    assert [e.state for e in events] == ["online", "degraded", "offline", "online"]
    assert theirs == []
    # one line per change of state (the first "online" is not a change worth a line)
    assert len(ours) == len(events) - 1 == 3, ours
    assert ours[0].startswith("device fridge-1 is degraded: ")
    assert ours[1].startswith("device fridge-1 is offline: ")
    assert ours[2] == "device fridge-1 is back online (was offline)"
    err = capfd.readouterr().err
    assert "No response received" not in err and "send: 0x" not in err and "pymodbus" not in err, err


def test_verbose_leaves_pymodbus_logging_on(caplog: pytest.LogCaptureFixture, pymodbus_logging: None) -> None:
    """`eqmon -v` sets pymodbus's logger to INFO: its lines are then wanted, and they come."""
    logging.getLogger("pymodbus").setLevel(logging.INFO)
    caplog.set_level(logging.DEBUG)
    asyncio.run(_outage())
    _, theirs = _split(caplog.records)
    assert any("No response received" in m for m in theirs), theirs
