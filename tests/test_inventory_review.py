"""The service reviews every bin's stock condition (eqmon_app/service.py ``_review_stock``): a
receipt or count made without a shelf, and time alone, raise and resolve stock alerts; a bin
never counted raises nothing. The built service on the state database (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from eqmon.config import Database
from eqmon_app.service import Service
from inventory.catalog import Catalog
from inventory.ledger import Ledger
from simulators.servers import free_port
from tests.sitefiles import example_on_free_ports, site


def test_review_raises_below_reorder_resolves_on_receipt_and_ignores_bins_never_counted(
    state_db: str, tmp_path: Path
) -> None:
    # a broker section (never connected: the service is built, not started)
    s = site(example_on_free_ports(mqtt_port=free_port())).model_copy(update={"database": Database(url=state_db)})

    async def main() -> None:
        service = Service(s, data_dir=tmp_path)
        try:
            cat = Catalog(service.db)
            gloves = cat.item("GLV-NIT-M")
            assert gloves is not None
            (glove_bin,) = [b for b in cat.bins() if b.item_id == gloves.id]
            now = time.time()
            await service._review_stock(now)
            assert [a for a in service.engine.active() if a.rule_id == "stock-level"] == []  # never counted
            ledger = Ledger(service.db)
            ledger.receive(gloves.id, glove_bin.location_id, 120, who="Sam", key="r1", at=now)
            await service._review_stock(now + 1)
            (alert,) = [a for a in service.engine.active() if a.rule_id == "stock-level"]
            assert alert.device_id == f"bin:GLV-NIT-M@{glove_bin.location_id}"
            assert "exam gloves M 120 left (min 50, par 500)" in alert.message and "bring 4 packs of 100" in alert.message
            ledger.receive(gloves.id, glove_bin.location_id, 380, who="Sam", key="r2", at=now + 2)
            await service._review_stock(now + 3)
            assert [a for a in service.engine.active() if a.rule_id == "stock-level"] == []
            stored = service.alert_store.get(alert.id)
            assert stored is not None and str(stored.state) == "resolved"
        finally:
            await service.stop()

    asyncio.run(main())
