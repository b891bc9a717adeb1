"""Silences, maintenance windows, manual resolution and pending conditions through the API, on
the built service (its engine, its state database, its audit log)."""

from __future__ import annotations

import time
from pathlib import Path

from dashboard_api.models import AlertOut, SilenceOut
from eqmon.domain import AlertState, Quality, Reading, Severity
from tests.test_api_support import api_on_built_service, auth_headers


def test_a_silence_is_created_applied_listed_audited_and_cancelled(tmp_path: Path) -> None:
    with api_on_built_service(tmp_path) as api:
        r = api.post(
            "/api/v1/silences",
            json={"device_id": "fridge-1", "owner": "Sam", "reason": "door seal replaced", "duration_s": 3600},
        )
        assert r.status_code == 201, r.text
        s = SilenceOut.model_validate(r.json())
        assert s.kind == "silence" and s.ends_at - s.starts_at == 3600
        # applied at once: an alert of fridge-1 raised now is kept but silenced
        api.service.engine.on_condition("fridge-1", "test-rule", True, "WARNING test", severity=Severity.WARNING, ts=time.time())
        (alert,) = [AlertOut.model_validate(a) for a in api.get("/api/v1/alerts?open_only=true").json()["items"]]
        assert alert.silenced is not None and alert.silenced.id == s.id and alert.silenced.owner == "Sam"
        assert [x["id"] for x in api.get("/api/v1/silences").json()] == [s.id]
        entries = api.service.state.audit_log.list(subject=f"silence:{s.id}")
        assert [(e.action, e.actor) for e in entries] == [("silence.create", "test-admin")]  # the logged-in user

        gone = api.request("DELETE", f"/api/v1/silences/{s.id}")
        assert gone.status_code == 200 and gone.json()["cancelled_at"] is not None
        (after,) = api.get("/api/v1/alerts?open_only=true").json()["items"]
        assert after["silenced"] is None  # the alert notifies now (the planner's "unsilenced")
        events = [e["kind"] for e in api.service.alert_store.events(alert.id)]
        assert events == ["raised", "unsilenced"]
        assert api.get("/api/v1/silences").json() == []
        assert api.request("DELETE", f"/api/v1/silences/{s.id}").status_code == 404


def test_silence_requests_that_make_no_sense_are_refused_with_the_field(tmp_path: Path) -> None:
    base = {"owner": "Sam", "reason": "work", "duration_s": 600}
    cases = [
        ({}, "body"),
        ({"device_id": "no-such"}, "body.device_id"),
        ({"location": "Mars"}, "body.location"),
        ({"kind": "maintenance", "rule_id": "fridge-too-warm"}, "body.rule_id"),
        ({"device_id": "fridge-1", "starts_at": 1000.0}, "body.starts_at"),
        ({"device_id": "fridge-1", "duration_s": 0}, "body.duration_s"),
        ({"device_id": "fridge-1", "duration_s": 40 * 86400}, "body.duration_s"),
    ]
    with api_on_built_service(tmp_path) as api:
        for extra, field in cases:
            r = api.post("/api/v1/silences", json={**base, **extra})
            assert r.status_code == 422, (extra, r.text)
            assert r.json()["error"]["field"] == field, (extra, r.json())
        assert api.get("/api/v1/silences?include_ended=true").json() == []


def test_maintenance_marks_the_device_and_its_readings(tmp_path: Path) -> None:
    with api_on_built_service(tmp_path) as api:
        r = api.post(
            "/api/v1/silences",
            json={"kind": "maintenance", "device_id": "fridge-2", "owner": "Biomed", "reason": "annual PM", "duration_s": 7200},
        )
        assert r.status_code == 201, r.text
        api.service.state.record([Reading("fridge-2", "temperature_c", 14.0, time.time(), Quality.GOOD, "°C")])
        dev = api.get("/api/v1/devices/fridge-2").json()
        assert dev["maintenance"]["owner"] == "Biomed" and dev["maintenance"]["reason"] == "annual PM"
        assert dev["readings"]["temperature_c"]["maintenance"] is True
        other = api.get("/api/v1/devices/fridge-1").json()
        assert other["maintenance"] is None


def test_resolve_by_hand_and_pending_conditions(tmp_path: Path) -> None:
    with api_on_built_service(tmp_path) as api:
        engine = api.service.engine
        now = time.time()
        engine.on_condition("fridge-1", "test-rule", True, "WARNING test", severity=Severity.WARNING, ts=now)
        (alert,) = engine.active()
        ann = auth_headers(api.service.state, "coordinator", "Ann")
        r = api.post(f"/api/v1/alerts/{alert.id}/resolve", json={"note": "probe reseated"}, headers=ann)
        assert r.status_code == 200, r.text
        body = AlertOut.model_validate(r.json())
        assert body.state == AlertState.RESOLVED and body.resolved_by == "Ann" and body.note == "probe reseated"
        assert "resolved by hand by Ann" in body.message
        events = api.service.alert_store.events(alert.id)
        assert (events[-1]["kind"], events[-1]["actor"], events[-1]["note"]) == ("resolved", "Ann", "probe reseated")
        assert api.post(f"/api/v1/alerts/{alert.id}/resolve", json={}, headers=ann).status_code == 404
        (audit,) = api.service.state.audit_log.list(subject=f"alert:{alert.id}")
        assert (audit.action, audit.actor, audit.detail["note"]) == ("alert.resolve", "Ann", "probe reseated")

        # a fridge above 8 °C for a few minutes of its 60: pending, not an alert
        engine.on_readings([Reading("fridge-1", "temperature_c", 9.0, now - 300, Quality.GOOD, "°C")])
        engine.on_readings([Reading("fridge-1", "temperature_c", 9.1, now, Quality.GOOD, "°C")])
        pending = api.get("/api/v1/alerts/pending").json()
        assert [(p["rule_id"], p["device_id"]) for p in pending] == [("fridge-too-warm", "fridge-1")]
        assert pending[0]["due"] == now - 300 + 3600
