"""The test servers of tests/servers.py really work, restart and keep their data."""

from __future__ import annotations

import queue
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import psycopg
import pytest
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from tests.servers import (
    MosquittoServer,
    PostgresServer,
    VictoriaMetricsServer,
    free_port,
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
