"""Operations, reports, simulators and the audit log through the API.

* ``/readyz`` on a running service (200, states only), on one not started (503), with its
  PostgreSQL state database stopped (503, and 200 again once it is back), with its MQTT broker
  (a Mosquitto of the test's own) stopped beyond the grace (degraded, then 503), with an
  InfluxDB sink that cannot be reached (degraded while the spool absorbs it, 503 once the spool
  is full);
* reports as JSON and CSV against what ``alerts.reports`` computes for seeded alerts, and the CSV
  against ``eqmon report --csv``;
* simulators: real in-process simulated equipment polled by the service; a fault injected
  through the API changes the reading the API serves, a clear ends it; roles; without
  simulators; every fault the catalogue lists is one the models take;
* the audit log as a page with filters and a keyset cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts import reports
from collectors.errors import SpoolFull
from eqmon.config import Site
from eqmon.db.engine import create
from eqmon.domain import Reading
from eqmon_app.readiness import DatabaseProbe
from eqmon_app.service import Service
from simulators import SimulatedSite
from simulators.control import FaultControl
from simulators.models import EQUIPMENT_MODELS
from simulators.servers import MosquittoServer, PostgresServer, free_port
from tests.sitefiles import example_on_free_ports, modbus_site_file, site
from tests.test_api_support import (
    NO_AUTH,
    api_client,
    api_on_built_service,
    auth_headers,
    modbus_only_site,
    running_service,
)
from tests.test_reports import fill, local

ROOT = Path(__file__).resolve().parent.parent


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str, every: float = 0.1) -> Any:
    """Call ``check`` until it returns something true (returned); AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


def states(body: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["state"] for c in body["components"]}


@contextlib.asynccontextmanager
async def started(site_: Site, data_dir: Path) -> AsyncIterator[Service]:
    service = Service(site_, data_dir=data_dir)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


# -- /readyz ---------------------------------------------------------------------------------


def test_readyz_is_200_on_a_running_service_and_says_only_states(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_service(tmp_path) as service, httpx.AsyncClient(base_url=service.api_url) as anyone:
            r = await anyone.get("/readyz")  # no token: probes carry none
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["ready"] is True and r.headers["cache-control"] == "no-store"
            # Modbus devices only: no broker; the embedded store is the one sink
            assert states(body) == {
                "collectors": "ok", "sink:embedded": "ok", "spool": "ok", "state-database": "ok",
            }  # fmt: skip
            assert all(c["detail"] for c in body["components"])
            for secret in ("127.0.0.1", str(tmp_path), "sqlite", str(service.site.devices[0].port)):
                assert secret not in r.text
            assert (await anyone.get("/healthz")).status_code == 200

    asyncio.run(main())


def test_readyz_is_503_before_the_service_has_started(tmp_path: Path) -> None:
    with api_on_built_service(tmp_path) as api:
        r = api.get("/readyz", headers=NO_AUTH)
        assert r.status_code == 503 and r.json()["ready"] is False
        assert states(r.json())["collectors"] == "down" and "not started" in r.json()["components"][0]["detail"]
        assert states(r.json())["state-database"] == "ok"
        assert api.get("/healthz", headers=NO_AUTH).status_code == 200  # alive all the same


def test_readyz_is_503_while_the_state_database_is_down_and_200_once_it_is_back(tmp_path: Path) -> None:
    with PostgresServer() as pg:
        data = example_on_free_ports()
        data["devices"] = [d for d in data["devices"] if d["protocol"] == "modbus"]
        data.pop("inventory")
        data["database"] = {"url": f"postgresql+psycopg://{pg.user}@{pg.host}:{pg.port}/{pg.dbname}"}

        async def main() -> None:
            async with started(site(data), tmp_path) as service, httpx.AsyncClient(base_url=service.api_url) as anyone:
                r = await anyone.get("/readyz")
                assert r.status_code == 200 and states(r.json())["state-database"] == "ok", r.text

                await asyncio.to_thread(pg.stop)
                t0 = time.monotonic()
                r = await until(lambda: _not_ready(anyone), 10, "/readyz 503 with the database stopped")
                db = next(c for c in r.json()["components"] if c["name"] == "state-database")
                assert db["state"] == "down" and "SELECT 1" in db["detail"], db
                assert states(r.json())["collectors"] == "ok"  # only the database is down
                assert str(pg.port) not in r.text and "postgres" not in r.text.lower()
                assert time.monotonic() - t0 < 5  # bounded: a refused connection is seen at once
                assert (await anyone.get("/healthz")).status_code == 200

                await asyncio.to_thread(pg.start)
                await until(lambda: _ready(anyone), 15, "/readyz 200 with the database back")

        asyncio.run(main())


async def _ready(client: httpx.AsyncClient) -> httpx.Response | None:
    r = await client.get("/readyz")
    return r if r.status_code == 200 else None


async def _not_ready(client: httpx.AsyncClient) -> httpx.Response | None:
    r = await client.get("/readyz")
    assert r.status_code in (200, 503), r.text
    return r if r.status_code == 503 else None


def test_the_database_check_is_bounded_and_one_at_a_time() -> None:
    """A database that accepts the connection and never answers: the check says down after its
    timeout, and a second check does not start a second thread while the first hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # connections wait in the backlog: never accepted, never answered
    engine = create(f"postgresql+psycopg://eqmon@127.0.0.1:{listener.getsockname()[1]}/eqmon")
    probe = DatabaseProbe(engine, timeout=0.3, cache_s=0)

    async def main() -> None:
        try:
            t0 = time.monotonic()
            first = await probe.check()
            assert first["state"] == "down" and first["detail"].startswith("no answer to SELECT 1"), first
            assert time.monotonic() - t0 < 1.5
            hung = probe._probe
            again = await probe.check()
            assert again["state"] == "down" and probe._probe is hung and not hung.done()
        finally:
            listener.close()  # the waiting connection is refused: the thread ends
            await until(lambda: asyncio.sleep(0, probe._probe is not None and probe._probe.done()), 15, "the probe's end")

    try:
        asyncio.run(main())
    finally:
        engine.dispose()


def test_readyz_broker_down_is_degraded_within_the_grace_then_503(tmp_path: Path) -> None:
    with MosquittoServer() as broker:
        data = example_on_free_ports(mqtt_port=broker.port)

        async def main() -> None:
            async with started(site(data), tmp_path) as service, httpx.AsyncClient(base_url=service.api_url) as anyone:
                r = await until(lambda: _ready(anyone), 15, "/readyz 200 with the broker connected")
                assert states(r.json())["mqtt-broker"] == "ok"
                service.readiness.broker_grace = 2.0  # the default is the link warning's 60 s

                await asyncio.to_thread(broker.stop)
                seen: list[str] = []

                async def broker_down() -> httpx.Response | None:
                    r = await anyone.get("/readyz")
                    seen.append(states(r.json())["mqtt-broker"])
                    return r if r.status_code == 503 else None

                r = await until(broker_down, 15, "/readyz 503 with the broker stopped past the grace")
                assert "degraded" in seen and seen[-1] == "down", seen
                broker_c = next(c for c in r.json()["components"] if c["name"] == "mqtt-broker")
                assert "disconnected for" in broker_c["detail"] and str(broker.port) not in r.text

                await asyncio.to_thread(broker.start)
                r = await until(lambda: _ready(anyone), 40, "/readyz 200 with the broker back")
                assert states(r.json())["mqtt-broker"] == "ok"

        asyncio.run(main())


def test_a_failing_sink_is_degraded_while_the_spool_absorbs_it_and_down_once_it_is_full(tmp_path: Path) -> None:
    data = example_on_free_ports(influx_url=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    data["devices"] = [d for d in data["devices"] if d["protocol"] == "modbus"]
    data.pop("inventory")
    data["telemetry"]["spool"] = {"max_readings": 1000}
    data["telemetry"]["self_metrics_interval"] = 0

    async def main() -> None:
        async with started(site(data), tmp_path) as service, httpx.AsyncClient(base_url=service.api_url) as anyone:
            now = time.time()
            await service.accept([Reading("fridge-1", "temperature_c", 5.0, now + i / 1000, unit="°C") for i in range(100)])

            async def influx_failing() -> httpx.Response | None:
                r = await anyone.get("/readyz")
                return r if states(r.json()).get("sink:influxdb") == "degraded" else None

            r = await until(influx_failing, 10, "the InfluxDB sink failing")
            assert r.status_code == 200 and r.json()["ready"] is True
            assert states(r.json())["sink:embedded"] == "ok" and states(r.json())["spool"] == "ok"
            influx = next(c for c in r.json()["components"] if c["name"] == "sink:influxdb")
            assert "failing since" in influx["detail"] and "wait in the spool" in influx["detail"]

            with pytest.raises(SpoolFull):
                for k in range(1, 20):
                    await service.accept([Reading("fridge-1", "temperature_c", 5.0, now + k + i / 1000, unit="°C") for i in range(100)])
            r = await anyone.get("/readyz")
            assert r.status_code == 503, r.text
            assert states(r.json()) == {
                "collectors": "ok", "sink:embedded": "ok", "sink:influxdb": "down", "spool": "down",
                "state-database": "ok",
            }, r.text  # fmt: skip
            assert "refused" in next(c["detail"] for c in r.json()["components"] if c["name"] == "spool")

    asyncio.run(main())


def test_metrics_take_an_api_token_with_metrics_read(tmp_path: Path) -> None:
    with api_on_built_service(tmp_path) as api:
        auth = api.service.state.auth
        token, _ = auth.issue(auth.add_user("prometheus", "viewer", None), "api", label="scraper")
        r = api.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "eqmon_" in r.text
        assert api.get("/metrics", headers=NO_AUTH).status_code == 401


# -- reports ---------------------------------------------------------------------------------

SINCE, UNTIL = "2026-03-02T07:00", "2026-03-02T19:00"


def _without_running_durations(data: dict[str, Any]) -> dict[str, Any]:
    """An excursion still open lasts until now: now moves between two calls."""
    for x in data.get("excursions", []):
        if x.get("end") is None:
            x["duration_s"] = None
    return data


def test_reports_as_json_and_csv_are_what_alerts_reports_computes(tmp_path: Path) -> None:
    with api_on_built_service(tmp_path) as api:
        engine = api.service.db
        fill(engine)
        tz = api.service.site.site.timezone
        period = reports.Period(reports.parse_time(SINCE, tz), reports.parse_time(UNTIL, tz), tz)
        viewer = auth_headers(api.service.state, "viewer")
        for name in reports.REPORTS:
            url = f"/api/v1/reports/{name}"
            r = api.get(url, params={"since": SINCE, "until": UNTIL}, headers=viewer)
            assert r.status_code == 200, r.text
            expected = reports.as_json(reports.make_report(engine, name, period))
            assert _without_running_durations(r.json()) == _without_running_durations(expected)
            assert r.json()["report"] == name and r.json()["period"]["since_local"].startswith(SINCE)

            unix = api.get(url, params={"since": str(int(period.since)), "until": str(int(period.until))})
            assert _without_running_durations(unix.json()) == _without_running_durations(r.json())

            c = api.get(url, params={"since": SINCE, "until": UNTIL, "format": "csv"}, headers=viewer)
            assert c.status_code == 200 and c.headers["content-type"] == "text/csv; charset=utf-8"
            assert c.headers["content-disposition"] == f'attachment; filename="eqmon-{name}-20260302-0700.csv"'
            text = reports.render_csv(reports.make_report(engine, name, period))
            if name == "excursions":  # the open excursion's duration runs to now
                assert c.text.splitlines()[0] == text.splitlines()[0] and len(c.text.splitlines()) == len(text.splitlines())
            else:
                assert c.text == text
        shift = api.get("/api/v1/reports/shift", params={"since": SINCE, "until": UNTIL}).json()
        assert shift["total"]["raised"] >= 1 and shift["period"]["shift"] == "day shift"
        assert [e["alert_id"] for e in api.get("/api/v1/reports/excursions", params={"since": SINCE, "until": UNTIL}).json()["excursions"]]

        # the CLI's CSV, from the same database and site, byte for byte
        site_file = modbus_site_file(tmp_path, f"sqlite:///{tmp_path / 'state.sqlite'}")
        for name in ("shift", "alert-volume"):
            cli = subprocess.run(
                [sys.executable, "-m", "eqmon_app.cli", "report", name, "--csv", "--since", SINCE, "--until", UNTIL,
                 "--config", str(site_file), "--data-dir", str(tmp_path)],
                cwd=ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert cli.returncode == 0, cli.stderr
            assert api.get(f"/api/v1/reports/{name}", params={"since": SINCE, "until": UNTIL, "format": "csv"}).text == cli.stdout


def test_reports_default_periods_and_refusals(tmp_path: Path) -> None:
    with api_on_built_service(tmp_path) as api:
        tz = api.service.site.site.timezone
        r = api.get("/api/v1/reports/shift")
        now = time.time()
        assert r.status_code == 200
        assert (r.json()["period"]["since"], r.json()["period"]["until"]) == (reports.shift_at(now, tz).since, reports.shift_at(now, tz).until)
        r = api.get("/api/v1/reports/alert-volume")
        assert len(r.json()["days"]) in (7, 8) and r.json()["rows"] == []
        r = api.get("/api/v1/reports/excursions", params={"until": "1772431200"})
        assert (r.json()["period"]["since"], r.json()["period"]["until"]) == (1772431200 - 12 * 3600, 1772431200)

        for params, field in (
            ({"since": "yesterday"}, "query.since"),
            ({"until": "2026-02-30"}, "query.until"),
            ({"since": "2026-03-02T19:00", "until": "2026-03-02T07:00"}, "query.since"),
            ({"since": "2020-01-01", "until": "2026-01-01"}, "query.since"),  # more than 366 days
            ({"since": "99999999999999"}, "query.since"),
            ({"format": "xml"}, "query.format"),
        ):
            r = api.get("/api/v1/reports/shift", params=params)
            assert r.status_code == 422 and r.json()["error"]["field"] == field, (params, r.text)
        assert api.get("/api/v1/reports/shift", headers=NO_AUTH).status_code == 401


def test_parse_time_takes_unix_seconds_or_local_iso_8601() -> None:
    tz = "Europe/Paris"
    assert reports.parse_time("1772431200", tz) == reports.parse_time("2026-03-02T07:00", tz) == local(2, 7)
    assert reports.parse_time("1772431200.5", tz) == 1772431200.5
    for bad in ("yesterday", "1e9", "-5", "", "0001-01-01T00:00+14:00", "99999999999999"):
        with pytest.raises(ValueError):
            reports.parse_time(bad, tz)


# -- simulators ------------------------------------------------------------------------------


def test_faults_injected_through_the_api_change_what_the_service_polls(tmp_path: Path) -> None:
    site_ = modbus_only_site()

    async def main() -> None:
        sim = SimulatedSite(site_, mqtt_host=None, mqtt_port=None)
        await sim.start()
        try:
            service = Service(site_, data_dir=tmp_path)
            service.state.simulators = FaultControl(sim)  # as eqmon demo does
            await service.start()
            try:
                await _drive_simulators(service)
            finally:
                await service.stop()
        finally:
            await sim.stop()

    asyncio.run(main())


async def _drive_simulators(service: Service) -> None:
    async with api_client(service, "coordinator") as coord, api_client(service, "viewer") as viewer, \
            httpx.AsyncClient(base_url=service.api_url) as anyone, api_client(service, "admin") as admin:  # fmt: skip
        page = (await viewer.get("/api/v1/simulators")).json()
        assert [d["id"] for d in page["items"]] == sorted(d.id for d in service.site.devices)
        fridge = next(d for d in page["items"] if d["id"] == "fridge-1")
        assert fridge["model"] == "medication_refrigerator" and fridge["active_faults"] == []
        faults = {f["name"]: f for f in fridge["faults"]}
        assert {"drift", "sentinel", "door_open", "exception", "reject"} <= set(faults) and "clear" not in faults
        target = next(p for p in faults["drift"]["params"] if p["name"] == "target")
        assert target["required"] and target["type"] == "number"
        only = (await viewer.get("/api/v1/simulators", params={"model": "vaccine_freezer", "limit": 1})).json()
        assert [d["id"] for d in only["items"]] == ["freezer-1"] and only["next_cursor"] is None

        async def temperature() -> dict[str, Any]:
            r = await viewer.get("/api/v1/devices/fridge-1")
            assert r.status_code == 200, r.text
            return r.json()["readings"].get("temperature_c") or {}

        t0 = time.time()
        await until(lambda: _fresh(temperature, t0, lambda t: t["quality"] == "good"), 15, "a good temperature polled")

        url = "/api/v1/simulators/fridge-1/faults"
        assert (await viewer.post(url, json={"fault": "sentinel"})).status_code == 403
        assert (await anyone.post(url, json={"fault": "sentinel"})).status_code == 401
        r = await coord.post(url, json={"fault": "sentinel"})
        assert r.status_code == 200 and r.json()["active_faults"] == ["sentinel"], r.text
        t1 = time.time()
        got = await until(lambda: _fresh(temperature, t1, lambda t: t["quality"] == "bad"), 10, "the sentinel polled")
        assert got["value"] is None

        r = await coord.delete(url)
        assert r.status_code == 200 and r.json()["active_faults"] == []
        t2 = time.time()
        await until(lambda: _fresh(temperature, t2, lambda t: t["quality"] == "good"), 10, "a good value again")

        r = await coord.post(url, json={"fault": "drift", "params": {"target": 30, "rate_per_min": 6000}})
        assert r.status_code == 200 and r.json()["active_faults"] == ["drift to 30"], r.text
        t3 = time.time()
        got = await until(lambda: _fresh(temperature, t3, lambda t: t["value"] is not None and t["value"] > 25), 10, "the drift polled")
        assert got["quality"] == "good"
        assert (await coord.delete(url)).json()["active_faults"] == []

        for body, status, field in (
            ({"fault": "melt"}, 422, "body.fault"),
            ({"fault": "drift"}, 422, "body.params"),  # target is required
            ({"fault": "drift", "params": {"target": 5, "tgt": 1}}, 422, "body.params"),
            ({"fault": "fault_bit", "params": {"bit": True}}, 422, "body.params.bit"),
            ({"fault": "clear", "params": {"x": 1}}, 422, "body.params"),
        ):
            r = await coord.post(url, json=body)
            assert r.status_code == status and r.json()["error"]["field"].startswith(field), (body, r.text)
        r = await coord.post("/api/v1/simulators/nope/faults", json={"fault": "stuck"})
        assert r.status_code == 404 and "no device" in r.json()["error"]["message"]

        audit = (await admin.get("/api/v1/audit", params={"action": "simulator.inject"})).json()["items"]
        assert [(e["actor"], e["detail"]["fault"]) for e in audit] == [("test-coordinator", "drift"), ("test-coordinator", "sentinel")]
        assert (await admin.get("/api/v1/audit", params={"action": "simulator.clear"})).json()["items"][0]["subject"] == "device:fridge-1"


async def _fresh(read: Callable[[], Awaitable[dict[str, Any]]], after: float, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The reading, once one polled after ``after`` satisfies ``ok``."""
    t = await read()
    return t if t and t["ts"] > after and ok(t) else None


def test_without_simulators_the_list_is_empty_and_faults_are_404(tmp_path: Path) -> None:
    with api_on_built_service(tmp_path) as api:
        assert api.get("/api/v1/simulators").json() == {"items": [], "next_cursor": None}
        for method in ("POST", "DELETE"):
            r = api.request(method, "/api/v1/simulators/fridge-1/faults", json={"fault": "stuck"})
            assert r.status_code == 404 and "eqmon demo" in r.json()["error"]["message"], r.text


def test_every_fault_the_catalogue_lists_is_one_the_models_take() -> None:
    """Each simulator model (every equipment model, the shelf, both sensors): each listed fault
    with its required params (examples) and with every default spelled out, then clear."""
    models = sorted(EQUIPMENT_MODELS)
    data: dict[str, Any] = {"site": {"name": "t"}, "mqtt": {"host": "127.0.0.1", "port": 1}, "devices": [
        {"id": f"d{i}", "kind": m, "protocol": "modbus", "host": "127.0.0.1", "port": 1, "unit_id": i + 1,
         "registers": [{"name": "x", "address": 0, "type": "input"}], "simulator": {"model": m, "seed": i}}
        for i, m in enumerate(models)
    ]}  # fmt: skip
    shelf = {"item": "gloves", "unit_weight_g": 5.6, "capacity": 600, "par": 500}
    for m, params in (("smart_shelf", shelf), ("room_environment", {}), ("differential_pressure", {})):
        data["devices"].append({"id": m, "kind": m, "protocol": "mqtt", "topic": f"t/{m}",
                                "fields": [{"metric": "x", "path": "x"}], "simulator": {"model": m, "seed": 1, "params": params}})  # fmt: skip
    control = FaultControl(SimulatedSite(site(data), mqtt_host="127.0.0.1", mqtt_port=1))
    tried = 0
    for d in control.devices():
        for f in d["faults"]:
            if f["name"] == "lastwill":  # drops the connection: needs a started device
                continue
            required = {p["name"]: p["example"] for p in f["params"] if p["required"]}
            defaults = {p["name"]: p["default"] for p in f["params"] if p["default"] is not None}
            for params in (required, {**defaults, **required}):
                assert control.inject(d["id"], f["name"], params)["id"] == d["id"], (d["id"], f["name"])
                tried += 1
        assert control.clear(d["id"])["active_faults"] in ([], ["rebooting"])
    assert tried > 2 * 12 * len(models)


# -- audit -----------------------------------------------------------------------------------


def test_audit_is_a_page_with_filters_and_a_keyset_cursor(tmp_path: Path) -> None:
    with api_on_built_service(tmp_path) as api:
        log = api.service.state.audit_log
        for i in range(7):
            log.add(actor="ann" if i % 2 else "bob", action="alert.acknowledge" if i < 5 else "silence.create",
                    subject=f"alert:a{i % 3}", detail={"i": i}, ts=1000.0 + (i // 2))  # ties on ts  # fmt: skip
        seen: list[int] = []
        cursor = None
        while True:
            r = api.get("/api/v1/audit", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.text
            seen += [e["detail"]["i"] for e in r.json()["items"] if "i" in e["detail"]]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == [6, 5, 4, 3, 2, 1, 0]  # newest first, ties by id, none twice or missed

        def items(**params: Any) -> list[int]:
            return [e["detail"]["i"] for e in api.get("/api/v1/audit", params=params).json()["items"]]

        assert items(actor="ann") == [5, 3, 1]
        assert items(action="silence.create") == [6, 5]
        assert items(subject="alert:a0") == [6, 3, 0]
        assert items(since=1002, actor="bob") == [6, 4]
        assert items(actor="ann", limit=1) == [5]
        for bad in ("not-a-cursor", "WyJ4Il0", "WzEsMiwzXQ"):  # junk, ["x"], [1,2,3]
            r = api.get("/api/v1/audit", params={"cursor": bad})
            assert r.status_code == 422 and r.json()["error"]["field"] == "query.cursor", r.text
        assert api.get("/api/v1/audit", headers=auth_headers(api.service.state, "coordinator")).status_code == 403
