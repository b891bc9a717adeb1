"""The test servers of simulators/servers.py really work, restart and keep their data; the
VictoriaMetrics download finds the machine's Debian mirror."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from simulators import servers
from simulators.harness import clear_retained
from simulators.servers import (
    AptSource,
    MosquittoServer,
    PostgresServer,
    VictoriaMetricsServer,
    debian_archive_source,
    ensure_victoria_metrics,
    free_port,
    parse_deb822_sources,
    parse_one_line_sources,
    pick_debian_archive,
    private_apt_sources,
    tcp_connectable,
)

pytestmark = pytest.mark.integration

TIMEOUT = 10.0


def _uid() -> str:
    return uuid.uuid4().hex[:10]


# ---------------------------------------------------------------------------------------------
# MQTT helper
# ---------------------------------------------------------------------------------------------
class MqttTestClient:
    """paho-mqtt 2.x client with a background loop and blocking helpers (MQTT 3.1.1)."""

    def __init__(self, server: MosquittoServer, client_id: str, *, clean_session: bool = True):
        self.server = server
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.session_present: bool | None = None
        self._subacks: dict[int, threading.Event] = {}
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            self.session_present = flags.session_present
            self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self._subacks.setdefault(mid, threading.Event()).set()

    def connect(self) -> MqttTestClient:
        self.client.connect(self.server.host, self.server.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), f"no CONNACK from {self.server}"
        return self

    def subscribe(self, topic: str, qos: int = 1) -> None:
        result, mid = self.client.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        ev = self._subacks.setdefault(mid, threading.Event())
        assert ev.wait(TIMEOUT), "no SUBACK"

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published()

    def get(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# Mosquitto
# ---------------------------------------------------------------------------------------------
def test_free_port_is_bindable():
    port = free_port()
    assert 1024 <= port <= 65535
    assert not tcp_connectable("127.0.0.1", port)


def test_mosquitto_publish_subscribe(mosquitto):
    assert mosquitto.port != 1883
    topic = f"eqmon/test/{_uid()}"
    with MqttTestClient(mosquitto, f"sub-{_uid()}") as sub, \
            MqttTestClient(mosquitto, f"pub-{_uid()}") as pub:
        sub.subscribe(topic)
        pub.publish(topic, b"hello", qos=1)
        msg = sub.get()
        assert (msg.topic, msg.payload, msg.qos) == (topic, b"hello", 1)


def test_mosquitto_persistent_session_survives_restart(mosquitto):
    """QoS1 message published while a persistent-session subscriber is away is delivered
    after the broker was restarted (clean SIGTERM -> persistence DB written)."""
    topic = f"eqmon/test/{_uid()}"
    sub_id = f"persist-{_uid()}"
    with MqttTestClient(mosquitto, sub_id, clean_session=False) as sub:
        assert sub.session_present is False
        sub.subscribe(topic, qos=1)
    with MqttTestClient(mosquitto, f"pub-{_uid()}") as pub:
        pub.publish(topic, b"while-away", qos=1)

    port, pid = mosquitto.port, mosquitto.pid
    mosquitto.restart()
    assert mosquitto.port == port and mosquitto.pid != pid

    # Reconnect with the same client id and WITHOUT subscribing again.
    with MqttTestClient(mosquitto, sub_id, clean_session=False) as sub:
        assert sub.session_present is True
        msg = sub.get()
        assert (msg.topic, msg.payload) == (topic, b"while-away")


def test_mosquitto_sigkill_after_autosave_keeps_queued_message():
    """Own broker: SIGKILL loses only what was not autosaved (autosave_interval=1 s)."""
    with MosquittoServer() as broker:
        topic = f"eqmon/test/{_uid()}"
        with MqttTestClient(broker, "killed-sub", clean_session=False) as sub:
            sub.subscribe(topic)
        with MqttTestClient(broker, "pub") as pub:
            pub.publish(topic, b"saved", qos=1)
        time.sleep(broker.autosave_interval * 2.5)
        broker.restart(kill=True)
        with MqttTestClient(broker, "killed-sub", clean_session=False) as sub:
            assert sub.session_present is True
            assert sub.get().payload == b"saved"


def test_clear_retained_leaves_no_retained_message():
    """The ``mosquitto`` fixture clears retained messages before each test (simulated devices
    publish their state retained)."""
    with MosquittoServer() as srv:
        with MqttTestClient(srv, f"pub-{_uid()}") as pub:
            for topic in ("site/a/state", "site/b/state"):
                info = pub.client.publish(topic, b"{}", qos=1, retain=True)
                info.wait_for_publish(TIMEOUT)
            pub.publish("site/c/live", b"not retained")
        assert sorted(clear_retained(srv.port)) == ["site/a/state", "site/b/state"]
        assert clear_retained(srv.port) == []
        with MqttTestClient(srv, f"sub-{_uid()}") as sub:
            sub.subscribe("site/#")
            with pytest.raises(queue.Empty):
                sub.get(timeout=0.5)


def test_mosquitto_start_failure_raises_with_log_tail():
    broker = MosquittoServer(extra_config=["no_such_option 1"])
    try:
        with pytest.raises(RuntimeError, match=r"(?s)exited with code.*no_such_option"):
            broker.start()
        assert not broker.running
    finally:
        broker.close()


# ---------------------------------------------------------------------------------------------
# VictoriaMetrics
# ---------------------------------------------------------------------------------------------
def _influx_write(server: VictoriaMetricsServer, points: list[Point]) -> None:
    with InfluxDBClient(url=server.url, token="test-token", org="eqmon") as client:
        client.write_api(write_options=SYNCHRONOUS).write(bucket="eqmon", record=points)


def test_victoria_influx_write_and_export(victoria):
    device = _uid()
    ts = 1_700_000_000_123
    _influx_write(victoria, [
        Point("infusion_pump").tag("device", device).field("rate_ml_h", 12.5)
        .field("running", True).time(ts, WritePrecision.MS),
    ])
    series = victoria.export(f'{{device="{device}"}}')
    by_name = {s["metric"]["__name__"]: s for s in series}
    # measurement_field naming; tags -> labels; org/bucket add no labels; bool -> 1.
    assert set(by_name) == {"infusion_pump_rate_ml_h", "infusion_pump_running"}
    assert by_name["infusion_pump_rate_ml_h"]["metric"] == {
        "__name__": "infusion_pump_rate_ml_h", "device": device}
    assert by_name["infusion_pump_rate_ml_h"]["values"] == [12.5]
    assert by_name["infusion_pump_rate_ml_h"]["timestamps"] == [ts]
    assert by_name["infusion_pump_running"]["values"] == [1]


def test_victoria_raw_line_protocol(victoria):
    device = _uid()
    victoria.write_lines(f"fridge,device={device},ward=icu temp_c=4.5 1700000000000000000")
    [s] = victoria.export(f'fridge_temp_c{{device="{device}"}}')
    assert s["metric"] == {"__name__": "fridge_temp_c", "device": device, "ward": "icu"}
    assert s["values"] == [4.5] and s["timestamps"] == [1_700_000_000_000]


def test_victoria_dedup_collapses_identical_writes(victoria):
    assert victoria.dedup
    device = _uid()
    point = Point("o2").tag("device", device).field("pressure_bar", 180.0).time(
        1_700_000_000_000, WritePrecision.MS)
    for _ in range(3):
        _influx_write(victoria, [point])
    [s] = victoria.export(f'{{device="{device}"}}')
    assert s["values"] == [180.0] and s["timestamps"] == [1_700_000_000_000]


def test_victoria_without_dedup_keeps_duplicates():
    """Control for the dedup test: the same three writes give three samples without it."""
    with VictoriaMetricsServer(dedup=False) as vm:
        for _ in range(3):
            vm.write_lines("o2,device=x pressure_bar=180 1700000000000000000")
        [s] = vm.export()
        assert s["values"] == [180, 180, 180]


def test_victoria_restart_keeps_data(victoria):
    device = _uid()
    victoria.write_lines(f"ventilator,device={device} rate=14 1700000000000000000")
    assert len(victoria.export(f'{{device="{device}"}}')) == 1
    port, pid = victoria.port, victoria.pid
    victoria.restart()
    assert victoria.port == port and victoria.pid != pid
    [s] = victoria.export(f'{{device="{device}"}}')
    assert s["metric"]["__name__"] == "ventilator_rate" and s["values"] == [14]


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------
def test_postgres_own_cluster_restart_keeps_data(postgres):
    assert postgres.port != 5432
    table = f"t_{_uid()}"
    with psycopg.connect(postgres.dsn, connect_timeout=10) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'pump')")
    port, pid = postgres.port, postgres.pid
    postgres.restart()
    assert postgres.port == port and postgres.pid != pid
    with psycopg.connect(postgres.dsn, connect_timeout=10) as conn:
        assert conn.execute(f"SELECT id, name FROM {table}").fetchall() == [(1, "pump")]


def test_postgres_sigkill_keeps_committed_data(postgres):
    table = f"t_{_uid()}"
    with psycopg.connect(postgres.dsn, connect_timeout=10) as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")
        conn.execute(f"INSERT INTO {table} VALUES (42)")
    # A connection that is open during the crash must not block the restart.
    idle = psycopg.connect(postgres.dsn, connect_timeout=10)
    try:
        postgres.restart(kill=True)
    finally:
        try:
            idle.close()
        except psycopg.Error:
            pass
    with psycopg.connect(postgres.dsn, connect_timeout=10) as conn:
        assert conn.execute(f"SELECT id FROM {table}").fetchall() == [(42,)]


def test_postgres_stop_with_open_connection_is_fast(postgres):
    """stop() is a fast shutdown: an idle client connection does not make it wait."""
    conn = psycopg.connect(postgres.dsn, connect_timeout=10)
    try:
        t0 = time.monotonic()
        postgres.stop()
        assert time.monotonic() - t0 < 5
        assert not postgres.running
    finally:
        postgres.start()
        conn.close()


def test_postgres_second_cluster_is_independent():
    with PostgresServer() as pg:
        with psycopg.connect(pg.dsn, connect_timeout=10) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("test",)
        assert pg.log_path.exists()


# ---------------------------------------------------------------------------------------------
# The VictoriaMetrics download: the machine's own Debian mirror, suite changed to trixie
# ---------------------------------------------------------------------------------------------
MIRROR = "http://mirror.invalid/debian"
SECURITY = "http://mirror.invalid/debian-security"

DEB822 = f"""\
Types: deb
# a comment inside a stanza, as Debian's own file has one
URIs: {MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {SECURITY}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

ONE_LINE = f"""\
# deb http://commented.invalid/debian bookworm main
deb {SECURITY} bookworm-security main contrib
deb-src {MIRROR} bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {MIRROR}/ bookworm main non-free-firmware
deb {MIRROR} bookworm-updates main  # trailing comment
"""


def test_deb822_sources_are_parsed_and_the_archive_entry_is_picked():
    entries = parse_deb822_sources(DEB822, "debian.sources")
    assert entries == [
        AptSource(MIRROR, ("bookworm", "bookworm-updates"), ("main",), "debian.sources"),
        AptSource(SECURITY, ("bookworm-security",), ("main",), "debian.sources"),
    ]
    assert pick_debian_archive(entries) == entries[0]
    # The security entry first in the file changes nothing.
    security_first = DEB822.split("\n\n")[1] + "\n" + DEB822.split("\n\n")[0]
    assert pick_debian_archive(parse_deb822_sources(security_first)).uri == MIRROR  # type: ignore[union-attr]


def test_deb822_disabled_stanzas_source_only_stanzas_and_several_uris():
    text = (
        "Types: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n"
        "Types: deb-src\nURIs: http://src.invalid/debian\nSuites: bookworm\nComponents: main\n\n"
        f"Types: deb deb-src\nURIs: {MIRROR} http://second.invalid/debian\nSuites: bookworm\n"
        "Components: main contrib\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n"
        " -----END PGP PUBLIC KEY BLOCK-----\n"
    )
    entries = parse_deb822_sources(text)
    assert [e.uri for e in entries] == [MIRROR, "http://second.invalid/debian"]
    assert entries[0].components == ("main", "contrib")


def test_one_line_sources_are_parsed_and_the_archive_entry_is_picked():
    entries = parse_one_line_sources(ONE_LINE, "sources.list")
    assert entries == [
        AptSource(SECURITY, ("bookworm-security",), ("main", "contrib"), "sources.list"),
        AptSource(MIRROR, ("bookworm",), ("main", "non-free-firmware"), "sources.list"),
        AptSource(MIRROR, ("bookworm-updates",), ("main",), "sources.list"),
    ]
    assert pick_debian_archive(entries) == entries[1]


def test_the_debian_archive_is_preferred_to_third_party_repositories():
    third_party = AptSource("https://vendor.invalid/apt", ("nodistro",), ("main",))
    updates_only = AptSource(MIRROR, ("bookworm-updates",), ("main",))
    release = AptSource(MIRROR, ("bookworm",), ("main",))
    assert pick_debian_archive([third_party, updates_only, release]) == release
    assert pick_debian_archive([third_party, updates_only]) == updates_only
    assert pick_debian_archive([AptSource(SECURITY, ("bookworm-security",), ("main",))]) is None
    assert pick_debian_archive([AptSource(MIRROR, ("bookworm",), ("contrib",))]) is None


def test_machine_configuration_files_in_both_formats(tmp_path: Path):
    sources_list = tmp_path / "sources.list"
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    # Only the security archive in sources.list; the mirror in a deb822 file.
    sources_list.write_text(f"deb {SECURITY} bookworm-security main\n")
    (parts / "debian.sources").write_text(DEB822)
    (parts / "vendor.sources.disabled").write_text(DEB822.replace(MIRROR, "http://disabled.invalid/debian"))
    picked = debian_archive_source(sources_list, parts)
    assert (picked.uri, picked.origin) == (MIRROR, str(parts / "debian.sources"))
    # One-line style only (an older machine).
    (parts / "debian.sources").unlink()
    sources_list.write_text(ONE_LINE)
    assert debian_archive_source(sources_list, parts).uri == MIRROR
    # Nothing usable: a clear error, no guess.
    sources_list.write_text(f"deb {SECURITY} bookworm-security main\n")
    with pytest.raises(RuntimeError, match="no Debian archive entry"):
        debian_archive_source(sources_list, parts)


def test_private_sources_change_only_the_suite():
    text = private_apt_sources(AptSource(MIRROR, ("bookworm", "bookworm-updates"), ("main",)))
    assert text == (
        f"Types: deb\nURIs: {MIRROR}\nSuites: trixie\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


def test_ensure_victoria_metrics_uses_the_cache_or_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("EQMON_VICTORIA_METRICS_BIN", raising=False)
    binary = tmp_path / "victoria-metrics"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)

    def no_download(*a):  # type: ignore[no-untyped-def]
        raise AssertionError("downloaded although the binary is cached")

    monkeypatch.setattr(servers, "_download_victoria_metrics", no_download)
    assert ensure_victoria_metrics(tmp_path) == binary
    monkeypatch.setenv("EQMON_VICTORIA_METRICS_BIN", "/opt/vm/victoria-metrics")
    assert ensure_victoria_metrics(tmp_path / "empty") == Path("/opt/vm/victoria-metrics")


def test_free_port_never_hands_out_the_same_port_twice_in_a_row() -> None:
    """Test sites put each simulated device on free_port(): two equal ports would make two
    devices one (seen once in five suite runs before free_port remembered what it handed out)."""
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
