"""Alert routes run on the service's event loop (the only writer of the engine and the alert
store), served by uvicorn inside that loop; acknowledgement end to end."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from dashboard_api.models import AlertOut
from eqmon.domain import AlertState, Severity
from tests.test_api_support import api_client, running_service


def test_acknowledgement_is_applied_on_the_service_loop(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_service(tmp_path) as service:
            loop_thread = threading.get_ident()
            calls: dict[str, list[int]] = {}

            def on_thread(obj: Any, name: str) -> None:
                original = getattr(obj, name)

                def wrapped(*args: Any, **kwargs: Any) -> Any:
                    calls.setdefault(name, []).append(threading.get_ident())
                    return original(*args, **kwargs)

                setattr(obj, name, wrapped)

            on_thread(service.engine, "acknowledge")
            on_thread(service.alert_store, "save")
            on_thread(service.state, "device_view")
            on_thread(service.state, "alert_view")
            service.engine.raise_system("api-test", Severity.WARNING, "WARNING eqmon: test alert", time.time())
            (alert,) = [a for a in service.engine.active() if a.rule_id == "api-test"]
            calls.clear()

            async with api_client(service, "coordinator", "Nurse Joy") as api, api_client(service, "coordinator", "someone else") as other:
                r = await api.post(f"/api/v1/alerts/{alert.id}/ack", json={"note": "on it"})
                assert r.status_code == 200, r.text
                body = AlertOut.model_validate(r.json())
                assert body.state == AlertState.ACKNOWLEDGED and body.acknowledged_by == "Nurse Joy"
                listed = (await api.get("/api/v1/alerts", params={"open_only": "true"})).json()["items"]
                assert any(a["id"] == alert.id and a["state"] == "acknowledged" for a in listed)
                assert (await api.get("/api/v1/devices")).status_code == 200
                assert (await api.get("/healthz")).json()["open_alerts"] >= 1
                again = await other.post(f"/api/v1/alerts/{alert.id}/ack", json={})
                assert again.json()["acknowledged_by"] == "Nurse Joy"  # the first one keeps it
                missing = await api.post("/api/v1/alerts/nope/ack", json={})
                assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

            assert set(calls) == {"acknowledge", "save", "device_view", "alert_view"}, calls
            for name, idents in calls.items():
                assert idents and all(i == loop_thread for i in idents), (name, idents, loop_thread)
            stored = [a for a in service.alert_store.open_alerts() if a.id == alert.id]
            assert stored and stored[0].state == AlertState.ACKNOWLEDGED
            assert stored[0].acknowledged_by == "Nurse Joy" and stored[0].extra.get("ack_note") == "on it"

    asyncio.run(main())
