"""A small HTTP control endpoint for a running :class:`~simulators.SimulatedSite` (stdlib asyncio,
no framework): testers inject faults at run time without restarting anything.

    GET  /devices   → 200 [{"id", "describe"}, …]  (one entry per simulated device)
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

log = logging.getLogger(__name__)

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"}
MAX_BODY = 65536


class ControlServer:
    def __init__(self, sim: Any) -> None:
        self.sim = sim
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
            return 200, [{"id": d, "describe": lines.get(d, "")} for d in self.sim.device_ids]
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
            try:
                self.sim.inject(device, fault, params)
            except KeyError as exc:
                return 404, {"error": exc.args[0] if exc.args else str(exc)}
            except ValueError as exc:
                return 400, {"error": str(exc)}
            log.info("control: %s %s %s", device, fault, params)
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
