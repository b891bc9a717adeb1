"""Alerts about eqmon's own links and buffers: one warning per outage of a link eqmon depends on
(an MQTT broker, a telemetry sink), raised after a grace period so that a restart is not an
incident, and one warning while the telemetry spool is filling up.

The service hands in plain facts (``LinkFacts``, spool fill) each second; the texts live here."""

from __future__ import annotations

from dataclasses import dataclass

from eqmon.domain import Severity

from .engine import AlertEngine

SPOOL_ALERT = "telemetry-spool-filling"
BROKER_GRACE = 60.0  # a broker restart is not an incident; a minute without it is
SINK_FAILING_GRACE = 300.0  # retries ride out short outages; five minutes of failures is one


@dataclass(slots=True)
class LinkFacts:
    key: str  # alert key, stable per link
    what: str  # "cannot reach the MQTT broker 10.0.0.5:1883"
    down_since: float | None  # None while the link works
    grace: float
    impact: str
    action: str
    detail: str = ""  # the last error, shown in brackets
    # the devices heard through the link (their names): one warning for all of them, their own
    # "device offline" alerts held while it is down (alerts/engine.py on_link)
    devices: tuple[str, ...] = ()


class LinkWatch:
    """Raises and resolves the link and spool warnings through the alert engine."""

    def __init__(self, engine: AlertEngine) -> None:
        self.engine = engine

    def check_links(self, now: float, links: list[LinkFacts]) -> None:
        for link in links:
            since = link.down_since
            if since is not None and now - since >= link.grace:
                detail = f" ({link.detail})" if link.detail else ""
                names = ", ".join(link.devices[:6]) + (f" and {len(link.devices) - 6} more" if len(link.devices) > 6 else "")
                heard = f" ({len(link.devices)} devices: {names})" if link.devices else ""
                self.engine.raise_system(
                    link.key,
                    Severity.WARNING,
                    f"WARNING eqmon: {link.what} since {self.engine.clock_time(since)}{detail}; "
                    f"{link.impact}{heard} — {link.action}",
                    since,
                )
            elif since is None:
                self.engine.resolve_system(link.key, now)

    def check_spool(self, now: float, *, fill: float, warn_at: float, depth: int, oldest_age: float) -> None:
        """Warning when the spool passes ``warn_at`` full; resolved below 90 % of that."""
        if fill >= warn_at:
            self.engine.raise_system(
                SPOOL_ALERT,
                Severity.WARNING,
                f"WARNING eqmon: telemetry spool filling up, {fill:.0%} full "
                f"({depth} readings, oldest {oldest_age / 60:.0f} min); "
                "check that InfluxDB is reachable, then call IT",
                now,
            )
        elif fill < warn_at * 0.9:
            self.engine.resolve_system(SPOOL_ALERT, now)
