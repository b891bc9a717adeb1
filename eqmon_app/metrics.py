"""eqmon's self-metrics in one prometheus_client registry (the only import of prometheus_client).

The values live where they are counted (the spool, the sink runners, the collectors, the bus,
the notification dispatcher, the alert engine, the shelf feed); this module's collector reads them at scrape
time, so the hot paths pay nothing (the outbox's pending rows are counted by the dispatcher
every few seconds, not at scrape time). The same
registry gives three views:

* ``text()``: the Prometheus exposition at ``GET /metrics``;
* ``flat()``: ``{name: value}`` for /healthz counters and for the ``eqmon_internal`` measurement
  written to the sinks: a sample's name without the ``eqmon_`` prefix and ``_total`` suffix, with
  its label values appended (``eqmon_readings_written_total{sink="embedded"}`` →
  ``readings_written_embedded``); summaries give ``…_avg`` (sum ÷ count).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from alerts.engine import AlertEngine
from alerts.notify import Dispatcher
from collectors.registry import Collector
from collectors.sinks import SinkRunner
from collectors.spool import Spool
from eqmon.bus import Bus
from eqmon.domain import Severity


class Sources(Protocol):
    """What the self-metrics read (the running service provides it)."""

    clock: Callable[[], float]
    spool: Spool
    sinks: list[SinkRunner]
    influx: Any  # the InfluxDB sink (its dead-letter count), or None
    collectors: list[Collector]
    bus: Bus
    engine: AlertEngine
    dispatcher: Dispatcher
    readings_in: int
    readings_lost: int
    accept_calls: int
    accept_seconds: float
    shelves: Any  # eqmon_app.shelves.ShelfConsumer, or None (no bin has a shelf)
    state: Any  # dashboard_api.state.MonitorState (its live-updates hub)


class _ServiceCollector:
    """A prometheus_client custom collector over the running service."""

    def __init__(self, sources: Sources) -> None:
        self.s = sources

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration time

    def collect(self) -> Iterator[Metric]:
        s = self.s
        now = s.clock()
        spool = s.spool

        def counter(name: str, help_: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, help_, value=value)

        def gauge(name: str, help_: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, help_, value=value)

        yield counter("eqmon_readings_accepted", "Readings durably accepted into the spool.", spool.accepted)
        rej = CounterMetricFamily("eqmon_readings_rejected", "Readings refused because the spool was full.", labels=["reason"])
        rej.add_metric(["spool_full"], spool.rejected_full)
        yield rej
        lost = CounterMetricFamily(
            "eqmon_readings_lost",
            "Readings lost: polls refused by a full spool, or oldest readings dropped by policy drop_oldest.",
            labels=["reason"],
        )
        lost.add_metric(["spool_full"], s.readings_lost)
        lost.add_metric(["dropped_oldest"], spool.dropped_oldest)
        yield lost

        written = CounterMetricFamily("eqmon_readings_written", "Readings written, per sink.", labels=["sink"])
        pending = GaugeMetricFamily("eqmon_sink_pending_readings", "Readings in the spool not yet written, per sink.", labels=["sink"])
        failures = CounterMetricFamily("eqmon_sink_write_failures", "Failed sink writes (retried).", labels=["sink"])
        latency = SummaryMetricFamily("eqmon_sink_write_seconds", "Latency of successful sink writes.", labels=["sink"])
        for r in s.sinks:
            written.add_metric([r.name], r.written)
            pending.add_metric([r.name], r.depth)
            failures.add_metric([r.name], r.failures)
            latency.add_metric([r.name], count_value=r.batches, sum_value=r.write_seconds)
        yield from (written, pending, failures, latency)
        dead = CounterMetricFamily("eqmon_readings_dead_lettered", "Points a sink rejected as malformed.", labels=["sink"])
        dead.add_metric(["influxdb"], s.influx.dead_lettered if s.influx is not None else 0)
        yield dead

        yield gauge("eqmon_spool_depth_readings", "Readings in the spool.", spool.depth)
        yield gauge("eqmon_spool_capacity_readings", "Bound of the spool.", spool.max_readings)
        yield gauge("eqmon_spool_fill_ratio", "Spool depth over its bound.", spool.fill)
        yield gauge("eqmon_spool_oldest_age_seconds", "Age of the oldest spool entry.", spool.oldest_age(now))
        acc = SummaryMetricFamily("eqmon_accept_seconds", "Latency of accept() (spool group commit).")
        acc.add_metric([], count_value=s.accept_calls, sum_value=s.accept_seconds)
        yield acc
        yield counter("eqmon_readings_received", "Readings handed in by the collectors.", s.readings_in)

        for c in s.collectors:
            st = c.status()
            p = st.protocol
            for k, v in st.counters.items():
                yield counter(f"eqmon_{p}_{k}", f"{p} collector: {k.replace('_', ' ')}.", v)
            for k, v in st.gauges.items():
                yield gauge(f"eqmon_{p}_{k}", f"{p} collector: {k.replace('_', ' ')}.", v)
            for k, (label, counts) in st.labelled.items():
                fam = CounterMetricFamily(f"eqmon_{p}_{k}", f"{p} collector: {k.replace('_', ' ')}.", labels=[label])
                for lv, v in sorted(counts.items()):
                    fam.add_metric([lv], v)
                yield fam

        subs = CounterMetricFamily("eqmon_subscriber_failures", "Subscriber calls that raised, per subscriber.", labels=["subscriber"])
        for name, n in sorted(s.bus.failures.items()):
            subs.add_metric([name], n)
        yield subs

        d = s.dispatcher
        for name, help_, per_channel in (
            ("eqmon_notifications_sent", "Notifications accepted by their server, per channel.", d.sent_by_channel),
            ("eqmon_notification_attempts_failed", "Failed delivery attempts (retried unless given up), per channel.",
             d.failed_by_channel),
            ("eqmon_notifications_given_up", "Notifications given up (refused for good, or expired), per channel.",
             d.given_up_by_channel),
        ):  # fmt: skip
            family = CounterMetricFamily(name, help_, labels=["channel"])
            for channel, count in sorted(per_channel.items()):
                family.add_metric([channel], count)
            yield family
        yield gauge(
            "eqmon_notification_outbox_pending",
            "Notifications waiting in the outbox (counted every few seconds).",
            d.pending,
        )
        yield gauge(
            "eqmon_notification_outbox_oldest_pending_age_seconds",
            "Age of the oldest notification waiting in the outbox (0: none).",
            d.oldest_pending_age(now),
        )
        open_alerts = GaugeMetricFamily(
            "eqmon_alerts_open", "Open alerts (active or acknowledged), per severity.", labels=["severity"]
        )
        by_severity = dict.fromkeys((str(x) for x in Severity), 0)
        for a in s.engine.active():
            by_severity[str(a.severity)] = by_severity.get(str(a.severity), 0) + 1
        for severity, count in by_severity.items():
            open_alerts.add_metric([severity], count)
        yield open_alerts

        hub = s.state.events  # the live updates, GET /api/v1/events (dashboard_api/events.py)
        yield gauge("eqmon_api_event_streams", "Live-update (Server-Sent Events) streams open.", hub.clients)
        yield counter("eqmon_api_events_published", "Live-update events published (alert, device, stock).", hub.published)
        yield counter(
            "eqmon_api_event_resets",
            "Live-update streams told to reload (an id no longer kept, or too far behind).",
            hub.resets,
        )
        views = s.state.views  # the device and alert lists' page cache (dashboard_api/viewcache.py)
        yield counter("eqmon_api_list_cache_hits", "Device and alert list pages served from the page cache.", views.hits)
        yield counter("eqmon_api_list_cache_misses", "Device and alert list pages built and encoded.", views.misses)
        rooms = s.state.stock_views  # the supply rooms' status (dashboard_api/routers/inventory.py)
        yield counter("eqmon_api_room_status_cache_hits", "Supply room statuses served from the cache.", rooms.hits)
        yield counter("eqmon_api_room_status_cache_misses", "Supply room statuses built and encoded.", rooms.misses)

        if s.shelves is not None:
            yield from _shelf_metrics(s.shelves)


def _shelf_metrics(c: Any) -> Iterator[Metric]:
    """The smart shelves' feed into the inventory (eqmon_app/shelves.py, inventory/feed.py)."""
    feed = c.feed
    yield CounterMetricFamily("eqmon_shelf_readings", "Shelf weight readings judged by the inventory.", value=feed.readings)
    yield CounterMetricFamily("eqmon_shelf_counts_applied", "Shelf readings that changed a bin's count (ledger rows).", value=feed.applied)
    anomalies = CounterMetricFamily(
        "eqmon_shelf_anomalies", "Shelf readings not applied, per reason and shelf.", labels=["reason", "device"]
    )
    for (reason, device), n in sorted(feed.anomalies.items()):
        anomalies.add_metric([reason, device], n)
    yield anomalies
    yield GaugeMetricFamily("eqmon_shelf_recalibrate", "Shelves drifting (a recalibrate warning is open).", value=len(feed.drifting()))
    yield GaugeMetricFamily("eqmon_shelf_pending", "Shelf readings and counts waiting to be written.", value=c.pending)
    yield CounterMetricFamily("eqmon_shelf_dropped", "Shelf readings or counts dropped over the memory bound.", value=c.dropped)
    yield CounterMetricFamily("eqmon_shelf_write_failures", "Failed writes of shelf counts (retried).", value=c.db_failures)


class SelfMetrics:
    def __init__(self, sources: Sources) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ServiceCollector(sources))

    def text(self) -> str:
        """Prometheus text exposition format (0.0.4)."""
        return generate_latest(self.registry).decode()

    def flat(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for fam in self.registry.collect():
            base = fam.name.removeprefix("eqmon_")
            if fam.type == "summary":
                sums = {tuple(x.labels.values()): x.value for x in fam.samples if x.name.endswith("_sum")}
                for x in fam.samples:
                    if x.name.endswith("_count"):
                        key = tuple(x.labels.values())
                        name = "_".join((f"{base}_avg", *key))
                        out[name] = sums.get(key, 0.0) / x.value if x.value else 0.0
                continue
            for x in fam.samples:
                if x.name.endswith("_created"):
                    continue
                name = x.name.removeprefix("eqmon_").removesuffix("_total")
                out["_".join((name, *x.labels.values()))] = float(x.value)
        return out
