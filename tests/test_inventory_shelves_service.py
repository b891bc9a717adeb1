"""The service's shelf wiring (eqmon_app/shelves.py) end to end, against a real Mosquitto and the
state database (``state_db``): simulated shelves publish; the real service collects their
readings and its shelf consumer writes the counts to the ledger off the event loop; a take is
consumption; taking the bin below its reorder point raises the stock alert with its text and the
pick list shows the refill; a restock resolves it; a drifting scale raises a "shelf-recalibrate" warning through
the alert engine (no phantom stock) that resolves once the scale is zeroed; /metrics counts the
anomalies; a database away for a while loses no change."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from eqmon import db
from eqmon.db.engine import create
from eqmon_app.service import Service
from inventory.catalog import Catalog
from inventory.ledger import Ledger
from inventory.picklist import pick_list
from inventory.status import bin_statuses
from simulators import SimulatedSite
from simulators.harness import wait_until
from tests.sitefiles import example_on_free_ports, site
from tests.test_api_support import api_client

GLOVE, TARE = 5.6, 410.0


def shelf_site(mqtt_port: int, url: str) -> Any:
    data = example_on_free_ports(mqtt_port=mqtt_port)
    data["devices"] = [d for d in data["devices"] if d["id"] == "shelf-gloves"]
    params = data["devices"][0]["simulator"]["params"]
    params.update(use_per_hour=0, initial=200, heartbeat_s=1, settle_s=1, hold_s=0.5, first_publish_s=0.2)
    data["database"] = {"url": url}
    data.pop("alerts", None)
    data.pop("inventory", None)  # the test fills its own catalog (fill_catalog)
    return site(data)


def fill_catalog(url: str) -> tuple[Engine, int, int]:
    e = create(url)
    db.upgrade(e)
    cat = Catalog(e)
    item = cat.add_item("GLV-M", "exam gloves M", pack_size=100, unit_weight_g=GLOVE)
    room = cat.add_location("room", "Ward 4B supply room")
    cat.set_bin(item.id, room.id, min_qty=50, reorder_point=150, par=500, tare_g=TARE, shelf_device_id="shelf-gloves")
    return e, item.id, room.id


@pytest.mark.integration
def test_simulated_shelves_drive_the_ledger_and_a_drift_raises_recalibrate(mosquitto, state_db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    engine, item, room = fill_catalog(state_db)
    ledger = Ledger(engine)
    s = shelf_site(mosquitto.port, state_db)

    async def main() -> None:
        service = Service(s, data_dir=tmp_path)
        assert service.shelves is not None and "inventory-shelves" in service.bus.subscribers
        service.shelves.feed.recal_clear_s = 5.0
        sim = SimulatedSite(s, mqtt_host="127.0.0.1", mqtt_port=mosquitto.port)
        await service.start()
        await sim.start()
        model: Any = sim.model("shelf-gloves")

        def stock() -> Any:
            return next((a for a in service.engine.active() if a.rule_id == "stock-level"), None)
        try:
            await wait_until(lambda: ledger.on_hand(item, room) == 200, 20, "the first count (200)")
            sim.inject("shelf-gloves", "take", {"count": 30})
            await wait_until(lambda: ledger.on_hand(item, room) == 170, 20, "30 gloves taken")
            assert ledger.history(item, room)[0].why == "consumption"
            # the new count goes to the live updates at once (a stock event), not at the review
            await wait_until(lambda: service.state.stock_published.get((item, room), ("", 0))[1] == 170, 5,
                             "the stock event of the take")  # fmt: skip
            assert stock() is None  # 170: above the reorder point (150)

            # below the reorder point: the stock alert, with its text; the pick list's refill
            sim.inject("shelf-gloves", "take", {"count": 60})
            await wait_until(lambda: stock() is not None, 20, "the stock alert")
            low = stock()
            assert ledger.on_hand(item, room) == 110 and low.device_id == f"bin:GLV-M@{room}"
            assert low.message.startswith("INFO Ward 4B supply room: exam gloves M 110 left (min 50, par 500)")
            assert low.message.endswith("— bring 4 packs of 100")
            lines = pick_list(bin_statuses(engine, now=time.time()), now=time.time())
            assert [(ln.sku, ln.on_hand, ln.packs, ln.quantity) for ln in lines] == [("GLV-M", 110, 4, 400)]

            # the scale's zero creeps 0.5 g a second to 3.5 gloves' weight: recalibrate, and no
            # phantom stock
            sim.inject("shelf-gloves", "drift", {"target": 3.5 * GLOVE, "rate_per_min": 30})

            def recalibrate() -> Any:
                return next((a for a in service.engine.active() if a.rule_id == "shelf-recalibrate"), None)

            await wait_until(lambda: recalibrate() is not None, 60, "the recalibrate warning")
            alert = recalibrate()
            assert alert.device_id == "shelf-gloves" and str(alert.severity) == "warning"
            assert alert.message.startswith("WARNING Exam gloves (M) bin (Ward 4B supply room): the scale drifts")
            await wait_until(lambda: abs(model.zero_offset - 3.5 * GLOVE) < 1e-6, 60, "the drift at its target")
            assert ledger.on_hand(item, room) == 110
            async with api_client(service) as api:
                text = (await api.get("/metrics")).text
            assert 'eqmon_shelf_anomalies_total{device="shelf-gloves",reason="drift"}' in text
            assert "eqmon_shelf_recalibrate 1.0" in text

            # zeroed again: the warning resolves; a restock run is counted
            sim.inject("shelf-gloves", "clear")
            await wait_until(lambda: recalibrate() is None, 30, "the recalibrate warning resolved")
            assert ledger.on_hand(item, room) == 110 and stock() is not None

            # the database away for a moment: the change waits in memory and is written after
            real_apply = service.shelves.feed.apply
            calls = 0

            def failing(changes: Any) -> Any:
                nonlocal calls
                calls += 1
                if calls <= 2:
                    raise ConnectionError("the database is away")
                return real_apply(changes)

            service.shelves.feed.apply = failing  # type: ignore[method-assign]
            sim.inject("shelf-gloves", "restock")
            await wait_until(lambda: ledger.on_hand(item, room) == 500, 30, "the restock to par")
            assert service.shelves.db_failures == 2 and service.shelves.dropped == 0
            assert ledger.history(item, room)[0].why == "restock"
            await wait_until(lambda: stock() is None, 10, "the stock alert resolved by the restock")
            assert service.alert_store.events(low.id)[-1]["kind"] == "resolved"
        finally:
            await sim.stop()
            await service.stop()
        assert ledger.verify() == []

    try:
        asyncio.run(main())
    finally:
        engine.dispose()
