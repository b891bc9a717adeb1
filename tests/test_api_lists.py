"""The device, alert and incident lists (filters, keyset pages), one alert with its history, one
incident with its devices and the alerts it explains; who may read them. The alert store's
bounded query (``AlertStore.resolved_page``) on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from alerts.store import AlertStore
from dashboard_api.models import AlertDetailOut, AlertOut, DeviceOut, IncidentDetailOut, IncidentOut
from dashboard_api.pagination import encode_cursor
from eqmon.config import Site
from eqmon.domain import Alert, AlertState, DeviceState, Severity
from tests import test_api_support
from tests.sitefiles import example_on_free_ports, site
from tests.test_api_support import NO_AUTH, InProcessApi, api_on_built_service, auth_headers

T0 = time.time() - 86400.0  # yesterday: every test event is in the past of the real clock
DEVICES = 250


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def big_site() -> Site:
    """The example's four Modbus devices, 243 more in five wards (each on its own address), and
    three behind one gateway (10.9.9.9:502): two in "Ward GW", one in "Ward 0"."""
    data = example_on_free_ports()
    modbus = [d for d in data["devices"] if d["protocol"] == "modbus"]
    fridge, freezer = (next(d for d in modbus if d["id"] == i) for i in ("fridge-1", "freezer-1"))
    devices = list(modbus)
    for i in range(DEVICES - len(modbus) - 3):
        d = copy.deepcopy(fridge if i % 2 == 0 else freezer)
        name = "Fridge" if i % 2 == 0 else "Freezer"
        d.update(id=f"dev-{i:03d}", name=f"{name} {i:03d}", location=f"Ward {i % 5}", port=20000 + i)
        devices.append(d)
    for n, loc in ((1, "Ward GW"), (2, "Ward GW"), (3, "Ward 0")):
        d = copy.deepcopy(fridge)
        d.update(id=f"gw-{n}", name=f"Gateway fridge {n}", location=loc, host="10.9.9.9", port=502, unit_id=n)
        devices.append(d)
    data["devices"] = devices
    return site(data)


@pytest.fixture
def big(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcessApi]:
    s = big_site()
    monkeypatch.setattr(test_api_support, "modbus_only_site", lambda: s)
    with api_on_built_service(tmp_path, clock=FakeClock(T0 + 7200)) as api:
        yield api


def ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


def error_of(r: httpx.Response, status: int, field: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"code", "message", "field"} and err["field"] == field, err
    return err


def walk(api: InProcessApi, url: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list, page by page; each page at most ``limit`` items."""
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        page = ok(api.get(url, params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})}))
        assert set(page) == {"items", "next_cursor"}
        assert len(page["items"]) <= limit
        out += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out
        assert len(page["items"]) == limit  # only the last page is short
    raise AssertionError("the list never ends")


def condition(api: InProcessApi, device: str, rule: str, ts: float, severity: Severity = Severity.WARNING) -> Alert:
    """An open alert of ``rule`` on ``device`` raised at ``ts`` (as the inventory raises its own)."""
    api.service.engine.on_condition(device, rule, True, f"{severity.upper()} {device}: {rule}", severity=severity, ts=ts)
    (a,) = [a for a in api.service.engine.active() if (a.rule_id, a.device_id) == (rule, device)]
    return a


def clear(api: InProcessApi, device: str, rule: str, ts: float) -> None:
    api.service.engine.on_condition(device, rule, False, "", severity=Severity.INFO, ts=ts)


def in_list_order(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alert list's order: open first, then resolved; each newest first (ties: id descending)."""
    newest = sorted(alerts, key=lambda a: (a["started_at"], a["id"]), reverse=True)
    return [a for a in newest if a["state"] != "resolved"] + [a for a in newest if a["state"] == "resolved"]


# -- devices ------------------------------------------------------------------------------------


def test_devices_are_listed_by_location_then_id_with_filters(big: InProcessApi) -> None:
    health = big.service.health
    health["dev-000"].success(T0)
    health["dev-001"].success(T0)
    health["dev-005"].unreachable(T0, "gateway: no reply")
    a = condition(big, "dev-001", "probe", T0, Severity.CRITICAL)

    every = ok(big.get("/api/v1/devices", params={"limit": 1000}))
    assert every["next_cursor"] is None and len(every["items"]) == DEVICES
    for d in every["items"]:
        DeviceOut.model_validate(d)
    keys = [(d["location"], d["id"]) for d in every["items"]]
    assert keys == sorted(keys) and len(set(keys)) == DEVICES
    by_id = {d["id"]: d for d in every["items"]}
    assert by_id["dev-001"]["open_alerts"] == [{"id": a.id, "severity": "critical", "metric": ""}]
    assert by_id["dev-000"]["open_alerts"] == []

    def ids(**params: Any) -> list[str]:
        return [d["id"] for d in ok(big.get("/api/v1/devices", params={"limit": 1000, **params}))["items"]]

    ward1 = ids(location="Ward 1")
    assert ward1 == sorted(k for loc, k in keys if loc == "Ward 1") and len(ward1) == 49
    assert set(ids(kind="vaccine_freezer")) == {k for k, d in by_id.items() if d["kind"] == "vaccine_freezer"}
    assert len(ids(protocol="modbus")) == DEVICES and ids(protocol="mqtt") == []
    assert ids(status="online") == ["dev-000", "dev-001"]
    assert ids(status="online,offline") == ids(status=["online", "offline"]) == ["dev-000", "dev-005", "dev-001"]
    assert ids(status="offline", location="Ward 0") == ["dev-005"] and ids(status="offline", location="Ward 1") == []
    assert len(ids(status="unknown")) == DEVICES - 3
    # q: a substring of the id or the name, any case
    found = ids(q="FREEZER 01")
    assert set(found) == {"dev-011", "dev-013", "dev-015", "dev-017", "dev-019"}
    assert found == [k for _, k in keys if k in found]  # in the list's order
    assert ids(q="gw-") == ["gw-3", "gw-1", "gw-2"]  # Ward 0 before Ward GW
    assert ids(q="nothing like it") == []

    error_of(big.get("/api/v1/devices", params={"status": "broken"}), 422, "query.status")
    error_of(big.get("/api/v1/devices", params={"location": "x" * 201}), 422, "query.location")
    error_of(big.get("/api/v1/devices", params={"q": ""}), 422, "query.q")
    error_of(big.get("/api/v1/devices", params={"status": ["online"] * 21}), 422, "query.status")
    error_of(big.get("/api/v1/devices", params={"limit": 0}), 422, "query.limit")
    # one device, and its id bounded
    assert ok(big.get("/api/v1/devices/dev-001"))["open_alerts"][0]["id"] == a.id
    error_of(big.get("/api/v1/devices/" + "x" * 201), 422, "path.device_id")


def test_walking_device_pages_repeats_and_skips_nothing(big: InProcessApi) -> None:
    every = [d["id"] for d in ok(big.get("/api/v1/devices", params={"limit": 1000}))["items"]]
    for limit in (1, 7, 100, 249, 250):
        assert [d["id"] for d in walk(big, "/api/v1/devices", limit)] == every, limit
    ward2 = [d["id"] for d in walk(big, "/api/v1/devices", 5, location="Ward 2")]
    assert ward2 == [i for i in every if i.startswith("dev-") and int(i[4:]) % 5 == 2]
    # a device that goes offline while a client walks a status filter: the cursor stays valid,
    # the device leaves the rest of the walk
    first = ok(big.get("/api/v1/devices", params={"limit": 3, "status": "unknown"}))
    big.service.health[every[10]].unreachable(T0, "gone")
    rest = walk(big, "/api/v1/devices", 50, status="unknown", cursor=first["next_cursor"])
    assert [d["id"] for d in rest] == every[3:10] + every[11:]


# -- alerts -------------------------------------------------------------------------------------


def many_alerts(api: InProcessApi, n: int = 250) -> None:
    """``n`` alerts of eqmon itself, three raised at each second (ties on started_at), every
    third critical; the first 150 resolved (in the store), the rest open (in the engine)."""
    engine = api.service.engine
    for i in range(n):
        engine.raise_system(f"k{i:03d}", Severity.CRITICAL if i % 3 == 0 else Severity.WARNING, f"alert {i}", T0 + i // 3)
    for i in range(150):
        engine.resolve_system(f"k{i:03d}", T0 + 1000 + i)


def test_walking_alert_pages_open_first_then_newest_repeats_and_skips_nothing(big: InProcessApi) -> None:
    many_alerts(big)
    store = big.service.alert_store
    asked: list[int] = []
    page_of = store.resolved_page

    def recording(**kw: Any) -> list[Alert]:
        asked.append(kw["limit"])
        return page_of(**kw)

    store.resolved_page = recording  # type: ignore[method-assign]
    for limit in (1, 7, 100, 250, 1000):
        asked.clear()
        items = walk(big, "/api/v1/alerts", limit)
        assert len(items) == 250 and len({a["id"] for a in items}) == 250, limit
        assert items == in_list_order(items), limit
        assert [a["state"] for a in items] == ["active"] * 100 + ["resolved"] * 150
        assert asked and max(asked) <= limit + 1  # the store is read a page at a time, never whole
    for a in items:
        AlertOut.model_validate(a)
    critical = walk(big, "/api/v1/alerts", 9, severity="critical")
    assert [a["id"] for a in critical] == [a["id"] for a in items if a["severity"] == "critical"]
    resolved = walk(big, "/api/v1/alerts", 11, state="resolved", severity="warning,critical")
    assert [a["id"] for a in resolved] == [a["id"] for a in items if a["state"] == "resolved"]


def test_alert_filters(big: InProcessApi) -> None:
    a1 = condition(big, "dev-001", "probe", T0 + 10, Severity.CRITICAL)  # Ward 1
    a2 = condition(big, "dev-002", "probe", T0 + 20)  # Ward 2
    a3 = condition(big, "dev-006", "door", T0 + 30)  # Ward 1
    clear(big, "dev-006", "door", T0 + 40)
    a4 = condition(big, "dev-011", "door", T0 + 50, Severity.INFO)  # Ward 1
    ok(big.post(f"/api/v1/alerts/{a4.id}/ack", json={"note": "looking"}))

    def ids(**params: Any) -> list[str]:
        return [a["id"] for a in ok(big.get("/api/v1/alerts", params=params))["items"]]

    assert ids() == [a4.id, a2.id, a1.id, a3.id]  # open newest first, then resolved
    assert ids(state="active") == [a2.id, a1.id]
    assert ids(state="acknowledged,resolved") == ids(state=["acknowledged", "resolved"]) == [a4.id, a3.id]
    assert ids(open_only="true") == [a4.id, a2.id, a1.id]
    assert ids(open_only="true", state="resolved") == []
    assert ids(severity="critical") == [a1.id] and ids(severity="info,warning") == [a4.id, a2.id, a3.id]
    assert ids(location="Ward 1") == [a4.id, a1.id, a3.id]
    assert ids(location="Ward 1", state="resolved") == [a3.id]
    assert ids(location="Nowhere") == []
    assert ids(device_id="dev-006") == [a3.id] and ids(device_id="dev-006", location="Ward 2") == []
    assert ids(rule_id="door") == [a4.id, a3.id]
    assert ids(since=T0 + 30) == [a4.id, a3.id] and ids(since=T0 + 31, state="resolved") == []
    listed = {a["id"]: a for a in ok(big.get("/api/v1/alerts"))["items"]}
    assert listed[a1.id]["location"] == "Ward 1" and listed[a4.id]["note"] == "looking"

    for params, field in [
        ({"state": "open"}, "query.state"),
        ({"state": "active,nope"}, "query.state"),
        ({"severity": "urgent"}, "query.severity"),
        ({"since": "nan"}, "query.since"),
        ({"since": "-1"}, "query.since"),
        ({"location": "x" * 201}, "query.location"),
        ({"device_id": "x" * 201}, "query.device_id"),
        ({"rule_id": "x" * 201}, "query.rule_id"),
        ({"state": "x" * 201}, "query.state.0"),
        ({"limit": 1001}, "query.limit"),
    ]:
        err = error_of(big.get("/api/v1/alerts", params=params), 422, field)
        assert "x" * 50 not in err["message"] and err["code"] == "validation_error"


def test_bad_cursors_are_a_422_naming_query_cursor(big: InProcessApi) -> None:
    device_cursor = ok(big.get("/api/v1/devices", params={"limit": 1}))["next_cursor"]
    bad = [
        "!!!not base64",
        "bm90IGpzb24",  # "not json"
        encode_cursor(["a", 1]),  # a list, not this list's key
        encode_cursor([2, 1.0, "x"]),
        encode_cursor([0, "1", "x"]),
        encode_cursor([True, 1.0, "x"]),
        "x" * 1001,
    ]
    for url in ("/api/v1/alerts", "/api/v1/incidents"):
        for cursor in [*bad, device_cursor]:
            error_of(big.get(url, params={"cursor": cursor}), 422, "query.cursor")
    for cursor in [*bad[:3], encode_cursor([0, 1.0, "x"])]:
        error_of(big.get("/api/v1/devices", params={"cursor": cursor}), 422, "query.cursor")


# -- one alert ----------------------------------------------------------------------------------


def test_one_alert_with_its_history(big: InProcessApi) -> None:
    clock = big.service.clock
    a = condition(big, "fridge-1", "probe", T0 + 7200)
    r = big.post(
        "/api/v1/silences", json={"device_id": "fridge-1", "reason": "replacing the probe", "duration_s": 600}
    )
    assert r.status_code == 201, r.text
    coordinator = auth_headers(big.service.state, "coordinator", "Nurse Joy")
    clock.t += 60  # type: ignore[attr-defined]
    ok(big.post(f"/api/v1/alerts/{a.id}/ack", json={"note": "moving the vials"}, headers=coordinator))
    clock.t += 60  # type: ignore[attr-defined]
    ok(big.post(f"/api/v1/alerts/{a.id}/resolve", json={"note": "probe replaced"}, headers=coordinator))

    body = AlertDetailOut.model_validate(ok(big.get(f"/api/v1/alerts/{a.id}")))
    assert body.state == AlertState.RESOLVED and body.resolved_by == "Nurse Joy" and body.note == "probe replaced"
    assert body.location == "Ward 4B clean utility room"
    own = [(e.kind, e.actor, e.note) for e in body.events if e.channel is None]
    assert own == [
        ("raised", "eqmon", "WARNING fridge-1: probe"),
        ("silenced", "test-admin", "replacing the probe"),
        ("acknowledged", "Nurse Joy", "moving the vials"),
        ("resolved", "Nurse Joy", "probe replaced"),
    ]
    assert [e.ts for e in body.events] == sorted(e.ts for e in body.events)
    # the messages about it (the notification outbox), by the example's log channel: queued,
    # not sent (the service is not running); never the recipient's address
    sent = [(e.kind, e.channel, e.note) for e in body.events if e.channel is not None]
    assert sent == [
        ("notification_pending", "log", "log message (raised)"),
        ("notification_pending", "log", "log message (resolved)"),
    ]
    raised, resolved = [m for m in big.service.outbox.list() if m.alert_id == a.id]
    big.service.outbox.mark_sent(raised.message_id, T0 + 7201)
    big.service.outbox.mark_failed(resolved.message_id, "no route", retry_at=None)
    body = AlertDetailOut.model_validate(ok(big.get(f"/api/v1/alerts/{a.id}")))
    sent = [(e.kind, e.ts, e.note) for e in body.events if e.channel is not None]
    assert sent == [
        ("notified", T0 + 7201, "log message (raised)"),
        ("notification_failed", resolved.created_at, "log message (resolved) after 1 attempt"),
    ]

    # while open, the engine's view (with its acknowledgement) is served, with its history so far
    b = condition(big, "fridge-2", "probe", clock.t)  # type: ignore[attr-defined]
    ok(big.post(f"/api/v1/alerts/{b.id}/ack", json={"note": "on it"}, headers=coordinator))
    open_one = AlertDetailOut.model_validate(ok(big.get(f"/api/v1/alerts/{b.id}")))
    assert open_one.state == AlertState.ACKNOWLEDGED and open_one.acknowledged_by == "Nurse Joy"
    assert [e.kind for e in open_one.events if e.channel is None] == ["raised", "acknowledged"]

    err = error_of(big.get("/api/v1/alerts/nope"), 404, None)
    assert err["code"] == "not_found"
    error_of(big.get("/api/v1/alerts/" + "x" * 201), 422, "path.alert_id")
    assert ok(big.get("/api/v1/alerts/pending")) == []  # not taken for an alert id


# -- incidents ----------------------------------------------------------------------------------


def test_an_incident_with_its_devices_and_the_alerts_it_explains(big: InProcessApi) -> None:
    engine, health = big.service.engine, big.service.health
    for dev in ("gw-1", "gw-2", "gw-3", "dev-000"):
        health[dev].success(T0 - 2000)
    before = condition(big, "gw-1", "probe", T0 - 100)  # open when the gateway fails: explained
    condition(big, "gw-2", "old", T0 - 1000)
    clear(big, "gw-2", "old", T0 - 900)  # over before it: not explained
    elsewhere = condition(big, "dev-000", "probe", T0 + 10)  # not one of its devices
    clock = big.service.clock
    for dev in ("gw-1", "gw-2", "gw-3"):
        health[dev].unreachable(T0, "gateway: target device failed to respond")
    clock.t = T0 + 60  # type: ignore[attr-defined]
    engine.tick(T0 + 60)
    during = condition(big, "gw-3", "door", T0 + 30)
    clear(big, "gw-3", "door", T0 + 40)  # during it: explained

    (inc,) = ok(big.get("/api/v1/incidents"))["items"]
    incident = IncidentOut.model_validate(inc)
    assert (incident.kind, incident.group, incident.rule_id) == ("gateway", "gateway:10.9.9.9:502", "incident-gateway")
    assert incident.device_ids == ["gw-1", "gw-2", "gw-3"] and incident.location is None  # two wards
    assert incident.state == AlertState.ACTIVE and incident.started_at == T0
    assert [i["id"] for i in ok(big.get("/api/v1/incidents", params={"location": "Ward GW"}))["items"]] == [incident.id]
    assert [i["id"] for i in ok(big.get("/api/v1/incidents", params={"location": "Ward 0"}))["items"]] == [incident.id]
    assert ok(big.get("/api/v1/incidents", params={"location": "Ward 1"}))["items"] == []
    assert ok(big.get("/api/v1/incidents", params={"state": "resolved"}))["items"] == []
    # it is an alert too: listed with the alerts of its locations
    assert incident.id in [a["id"] for a in ok(big.get("/api/v1/alerts", params={"location": "Ward GW"}))["items"]]

    detail = IncidentDetailOut.model_validate(ok(big.get(f"/api/v1/incidents/{incident.id}")))
    assert [(d.id, d.location, d.status) for d in detail.devices] == [
        ("gw-1", "Ward GW", DeviceState.OFFLINE), ("gw-2", "Ward GW", DeviceState.OFFLINE),
        ("gw-3", "Ward 0", DeviceState.OFFLINE),
    ]  # fmt: skip
    assert [a.id for a in detail.alerts] == [during.id, before.id]
    assert elsewhere.id not in [a.id for a in detail.alerts]
    assert [e.kind for e in detail.events if e.channel is None] == ["raised"]

    # the gateway is back: resolved; what starts after it is not its doing
    clock.t = T0 + 600  # type: ignore[attr-defined]
    health["gw-1"].success(T0 + 600)
    after = condition(big, "gw-2", "later", T0 + 700)
    resolved = IncidentDetailOut.model_validate(ok(big.get(f"/api/v1/incidents/{incident.id}")))
    assert resolved.state == AlertState.RESOLVED and resolved.resolved_at == T0 + 600
    assert [a.id for a in resolved.alerts] == [during.id, before.id] and after.id not in [a.id for a in resolved.alerts]
    assert [e.kind for e in resolved.events if e.channel is None] == ["raised", "resolved"]
    assert [i["id"] for i in ok(big.get("/api/v1/incidents", params={"state": "resolved"}))["items"]] == [incident.id]
    assert ok(big.get("/api/v1/incidents", params={"open_only": "true"}))["items"] == []

    error_of(big.get(f"/api/v1/incidents/{before.id}"), 404, None)  # an alert, not an incident
    error_of(big.get("/api/v1/incidents/nope"), 404, None)
    error_of(big.get("/api/v1/incidents/" + "x" * 201), 422, "path.incident_id")


# -- who may read -------------------------------------------------------------------------------


def test_a_viewer_reads_every_list_and_no_token_reads_none(big: InProcessApi) -> None:
    health = big.service.health
    for dev in ("gw-1", "gw-2", "gw-3"):
        health[dev].unreachable(T0, "no reply")
    big.service.engine.tick(T0 + 60)
    (incident,) = big.service.engine.active()
    urls = [
        "/api/v1/devices", "/api/v1/devices/gw-1", "/api/v1/alerts", f"/api/v1/alerts/{incident.id}",
        "/api/v1/incidents", f"/api/v1/incidents/{incident.id}",
    ]  # fmt: skip
    viewer = auth_headers(big.service.state, "viewer")
    for url in urls:
        assert big.get(url, headers=viewer).status_code == 200, url
        err = error_of(big.get(url, headers=NO_AUTH), 401, None)
        assert err["code"] == "unauthorized"
        error_of(big.get(url, headers={"Authorization": "Bearer not-a-token"}), 401, None)


# -- the store's bounded query, on SQLite and PostgreSQL ------------------------------------------


def test_resolved_page_is_a_keyset_query_with_filters(engine: Engine) -> None:
    store = AlertStore(engine, clock=lambda: T0)
    rows: list[Alert] = []
    for i in range(40):
        a = Alert(
            id=f"a{i:02d}", rule_id="incident-location" if i % 10 == 0 else f"rule-{i % 3}",
            device_id=f"dev-{i % 4}", metric="", severity=Severity.CRITICAL if i % 2 else Severity.WARNING,
            state=AlertState.RESOLVED if i % 7 else AlertState.ACTIVE, message=f"m{i}",
            started_at=T0 + i // 2, resolved_at=T0 + i // 2 + 30 if i % 7 else None,
            extra={"location": "Ward 9"} if i % 5 == 0 else {},
        )  # fmt: skip
        store.save(a)
        rows.append(a)
    resolved = sorted((a for a in rows if a.state == AlertState.RESOLVED), key=lambda a: (a.started_at, a.id), reverse=True)

    def ids(found: list[Alert]) -> list[str]:
        return [a.id for a in found]

    assert ids(store.resolved_page(limit=100)) == ids(resolved)
    walked: list[Alert] = []
    before = None
    while True:
        page = store.resolved_page(limit=4, before=before)
        walked += page
        if len(page) < 4:
            break
        before = (page[-1].started_at, page[-1].id)
    assert ids(walked) == ids(resolved)

    def expect(pred: Any) -> list[str]:
        return [a.id for a in resolved if pred(a)]

    assert ids(store.resolved_page(limit=100, since=T0 + 10)) == expect(lambda a: a.started_at >= T0 + 10)
    assert ids(store.resolved_page(limit=100, until=T0 + 10, resolved_since=T0 + 35)) == expect(
        lambda a: a.started_at <= T0 + 10 and a.resolved_at >= T0 + 35
    )
    assert ids(store.resolved_page(limit=100, severities=["critical"])) == expect(lambda a: a.severity == "critical")
    assert ids(store.resolved_page(limit=100, device_id="dev-1")) == expect(lambda a: a.device_id == "dev-1")
    assert ids(store.resolved_page(limit=100, device_ids=[])) == []
    assert ids(store.resolved_page(limit=100, rule_id="rule-2")) == expect(lambda a: a.rule_id == "rule-2")
    assert ids(store.resolved_page(limit=100, rule_prefix="incident-")) == expect(lambda a: a.rule_id.startswith("incident-"))
    assert ids(store.resolved_page(limit=100, rule_prefix="rule_")) == []  # "_" is not a wildcard
    # a location: its devices, or the location the alert names itself (an incident's)
    assert ids(store.resolved_page(limit=100, device_ids=["dev-3"], location="Ward 9")) == expect(
        lambda a: a.device_id == "dev-3" or a.extra.get("location") == "Ward 9"
    )
    assert ids(store.resolved_page(limit=100, location="Ward 9")) == expect(lambda a: a.extra.get("location") == "Ward 9")
