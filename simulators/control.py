"""Fault injection into a running :class:`~simulators.SimulatedSite`: :class:`FaultControl` (what
a tester may do: list the simulated devices with their model, active faults and the faults each
takes, inject a fault, clear) shared by the service's API (``/api/v1/simulators`` while
``eqmon demo`` runs) and by :class:`ControlServer`, a small HTTP endpoint (stdlib asyncio, no
framework) for ``eqmon simulate --control-port``: testers inject faults at run time without
restarting anything.

    GET  /devices   → 200 [{"id", "describe", "model", "protocol", "active_faults", "faults"}, …]
    POST /faults    {"device": "fridge-1", "fault": "exception", "params": {"code": 6}}
                    → 200 {"ok": true} | 404 unknown device | 400 bad fault or params

    curl -s localhost:8099/devices
    curl -s -XPOST localhost:8099/faults -d '{"device":"fridge-1","fault":"silence"}'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from .faults import check_params

log = logging.getLogger(__name__)


class FaultError(ValueError):
    """A fault a device does not take (``field`` ``"fault"``) or params it refuses
    (``"params"``)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class FaultControl:
    """What testers may do with a running simulated site. ``KeyError`` for a device that is not
    simulated (its message says why), :class:`FaultError` for a bad fault or params; a fault
    applied is logged."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim

    def devices(self) -> list[dict[str, Any]]:
        """Every simulated device, in the site file's order."""
        return [self.device(d) for d in self.sim.device_ids]

    def device(self, device_id: str) -> dict[str, Any]:
        """One simulated device: id, name, location, protocol, model, active faults and the
        faults it takes (each with its params)."""
        faults = self.sim.faults(device_id)  # KeyError first, for a device not simulated
        d = self.sim.site.device(device_id)
        return {
            "id": d.id, "name": d.display_name, "location": d.location, "protocol": d.protocol,
            "model": self.sim.model_name(device_id), "active_faults": self.sim.active_faults(device_id),
            "faults": [f.as_dict() for f in faults],
        }  # fmt: skip

    def inject(self, device_id: str, fault: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Apply ``fault`` (``clear`` ends them all) to a simulated device now; the device as
        :meth:`device` shows it after."""
        params = dict(params or {})
        known = {f.name: f for f in self.sim.faults(device_id)}
        if fault == "clear":
            if params:
                raise FaultError("clear takes no params", "params")
        elif fault not in known:
            raise FaultError(f"{device_id} takes no fault {fault!r}; expected one of {', '.join([*known, 'clear'])}", "fault")
        else:
            try:
                check_params(known[fault], params)
            except ValueError as exc:
                raise FaultError(f"{device_id}: {exc}", "params") from None
        try:
            self.sim.inject(device_id, fault, params)
        except ValueError as exc:
            raise FaultError(str(exc), "params") from None
        log.info("fault control: %s %s %s", device_id, fault, params)
        return self.device(device_id)

    def clear(self, device_id: str) -> dict[str, Any]:
        """End every fault of a simulated device."""
        return self.inject(device_id, "clear", {})

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"}
MAX_BODY = 65536


class ControlServer:
    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.control = FaultControl(sim)
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/devices":
            if method != "GET":
                return 405, {"error": "use GET"}
            lines = {line.split()[0]: line for line in self.sim.describe()}
            return 200, [{**d, "describe": lines.get(d["id"], "")} for d in self.control.devices()]
        if path == "/faults":
            if method != "POST":
                return 405, {"error": "use POST"}
            try:
                req = json.loads(body or b"{}")
                device, fault = req["device"], req["fault"]
                params = req.get("params") or {}
                if not isinstance(params, dict):
                    raise TypeError("params must be an object")
            except (ValueError, KeyError, TypeError) as exc:
                return 400, {"error": f'expected {{"device", "fault", "params"}}: {exc}'}
            if not isinstance(device, str) or not isinstance(fault, str):
                return 400, {"error": "device and fault are strings"}
            try:
                self.control.inject(device, fault, params)
            except KeyError as exc:
                return 404, {"error": exc.args[0] if exc.args else str(exc)}
            except ValueError as exc:
                return 400, {"error": str(exc)}
            return 200, {"ok": True}
        return 404, {"error": f"no such path {path}; try GET /devices or POST /faults"}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 10)
            parts = request.decode("latin-1").split()
            if len(parts) < 2:
                return
            method, path = parts[0].upper(), parts[1].split("?", 1)[0]
            length = 0
            while True:
                line = await asyncio.wait_for(reader.readline(), 10)
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
            if length > MAX_BODY:
                status, payload = 413, {"error": "body too large"}
            else:
                body = await reader.readexactly(length) if length else b""
                status, payload = self._route(method, path, body)
            data = json.dumps(payload).encode()
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
