"""Simulated smart shelves (simulators/shelves.py) against the shelf feed (inventory/feed.py), on
a fake clock without a broker: the example site's gloves shelf publishes through its real
publisher, its messages are parsed by the MQTT collector's ``parse_payload`` with the site
file's fields and judged by ``ShelfFeed``. Settling after each take or restock is published as
``stable: false`` and never counted; an hour of day-shift use is counted piece for piece; the
scale's faults (foreign object, bin lifted, drifting zero) are anomalies, not stock."""

from __future__ import annotations

import json
import random
from typing import Any

from sqlalchemy import create_engine

from collectors.mqtt import parse_payload
from eqmon.config import MqttDevice
from inventory.feed import Recalibrate, ShelfBin, ShelfFeed
from simulators.shelves import DevicePublisher, ShelfModel
from tests.sitefiles import example_dict, site

T0 = 1_750_000_000.0  # 15 June 2025, 15:06 UTC: a day shift


class _Sent:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        self.messages.append(payload)


class Shelf:
    """The example's gloves shelf with ``params`` over its own, its publisher on a fake clock,
    and a feed that judges every message it publishes."""

    def __init__(self, **params: Any) -> None:
        s = site(example_dict())
        dev = next(d for d in s.mqtt_devices() if d.id == "shelf-gloves")
        assert isinstance(dev, MqttDevice) and dev.simulator is not None and dev.topic is not None
        self.device = dev
        p = {**dev.simulator.param_values(), **params}
        self.model = ShelfModel(random.Random(5), p)
        self.now = 0.0
        self.pub = DevicePublisher(dev.id, dev.topic, self.model, host="127.0.0.1", port=1,
                                   clock=lambda: self.now, wall=lambda: T0 + self.now)  # fmt: skip
        self.sent = _Sent()
        self.pub.client = self.sent  # type: ignore[assignment]
        self.pub.begin()
        self.feed = ShelfFeed(create_engine("sqlite://"), recal_clear_s=600)
        self.feed.set_bins([(ShelfBin(dev.id, 1, 1, p["unit_weight_g"], p["tare_g"]), None)])
        self.docs: list[dict[str, Any]] = []
        self.recal: list[Recalibrate] = []

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = round(self.now + 0.1, 6)
            self.pub.tick(self.now)
            for payload in self.sent.messages:
                self.docs.append(json.loads(payload))
                readings = parse_payload(self.device, self.device.id, payload, T0 + self.now)
                self.feed.judge(readings)  # no database: the feed's own reckoning
            self.sent.messages.clear()
            self.recal += self.feed.take_recalibrate()

    @property
    def count(self) -> int | None:
        return self.feed._shelves[self.device.id].count

    def anomalies(self) -> dict[str, int]:
        return {reason: n for (reason, _), n in self.feed.anomalies.items()}


def test_settling_is_published_unstable_and_settles_on_the_true_weight() -> None:
    m = ShelfModel(random.Random(1), {"item": "gloves", "unit_weight_g": 5.6, "tare_g": 410, "capacity": 600,
                                      "par": 500, "initial": 300})  # fmt: skip
    m.step(10.0)
    assert m.stable
    m.take(20)  # 112 g out at once
    swing = []
    for i in range(1, 31):
        m.step(10.0 + i * 0.1)
        swing.append(m.weight_g - m.gross_true)
        if i < 30:
            assert not m.stable and m.doc()["stable"] is False
    assert m.stable and m.doc()["stable"] is True
    assert max(abs(x) for x in swing[:10]) > 10  # the reading swings by tens of grams first …
    for i in range(20):
        m.step(13.0 + i * 0.1)
    assert abs(m.weight_g - m.gross_true) < 1.5  # … and then reads the bin within the noise
    quiet = ShelfModel(random.Random(1), {"item": "g", "unit_weight_g": 5.6, "capacity": 9, "par": 9, "settle_s": 0})
    quiet.take(3)
    assert quiet.stable


def test_an_hour_of_use_is_counted_piece_for_piece_and_settling_never_counts() -> None:
    shelf = Shelf(initial=400, use_per_hour=120, restock_at=0.0)
    shelf.run(3600)
    assert shelf.model.taken > 100  # day shift: 1.6 × 120 an hour
    unstable = [d for d in shelf.docs if d["stable"] is False]
    assert len(unstable) > 50
    assert shelf.count == shelf.model.count_true
    assert set(shelf.anomalies()) <= {"unstable"}
    assert shelf.recal == []
    # a restock run: settles, then counted
    shelf.pub.inject("restock")
    shelf.run(10)
    assert shelf.count == shelf.model.count_true == 500


def test_scale_faults_are_anomalies_not_stock() -> None:
    shelf = Shelf(initial=200, use_per_hour=0)
    shelf.run(40)
    assert shelf.count == 200
    # something unrelated put in the bin: 2.5 gloves' weight
    shelf.pub.inject("foreign")
    assert "foreign" in shelf.pub.active_faults
    shelf.run(70)
    assert shelf.count == 200
    assert shelf.anomalies().get("unexplained", 0) >= 2  # the change and the heartbeats after it
    shelf.pub.inject("clear")
    shelf.run(40)
    # the bin lifted off the scale: negative
    shelf.pub.inject("negative")
    shelf.run(40)
    assert shelf.docs[-1]["weight_g"] < 2 and shelf.anomalies().get("negative", 0) >= 1
    assert shelf.count == 200
    shelf.pub.inject("clear")
    shelf.run(40)
    shelf.pub.inject("take", {"count": 4})
    shelf.run(10)
    assert shelf.count == 196
    # the scale's zero creeps 1 g a minute up to 30 g: a recalibrate condition, no phantom stock
    shelf.pub.inject("drift", {"target": 30, "rate_per_min": 1})
    shelf.run(40 * 60)
    assert abs(shelf.model.zero_offset - 30) < 1e-6
    assert shelf.count == 196
    assert [r.active for r in shelf.recal] == [True]
    # zeroed again: counted again once the readings held for recal_clear_s
    shelf.pub.inject("clear")
    shelf.run(660)
    assert [r.active for r in shelf.recal] == [True, False]
    assert shelf.count == 196 == shelf.model.count_true
