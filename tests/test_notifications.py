"""Notifications through the outbox (alerts/notify/): routing on a fake clock, and delivery
against real receivers (SMTP with STARTTLS and login, a webhook receiver that checks the
signature, Mosquitto), on SQLite and PostgreSQL (``state_db``)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from alerts.notify import Dispatcher, NotificationPlanner, build_senders
from alerts.notify.message import verify
from alerts.store import AlertStore
from eqmon import db
from eqmon.config import ConfigError, Database, Notifications, parse_site
from eqmon.db.repos import OutboxRepo, queue_notifications
from eqmon.domain import Alert, AlertState, Severity
from simulators.receivers import SmtpReceiver, WebhookReceiver, self_signed_cert

SECRET = "s3cret-for-tests"

BASE = """\
site: {name: St Test}
devices:
  - {id: fridge-1, kind: medication_fridge, name: Fridge 1, location: Ward 4B, protocol: modbus,
     host: 127.0.0.1, port: 15999, registers: [{name: temperature_c, address: 0}]}
  - {id: fridge-2, kind: medication_fridge, name: Fridge 2, location: ICU, protocol: modbus,
     host: 127.0.0.1, port: 15998, registers: [{name: temperature_c, address: 0}]}
contacts:
  - {name: Ann, email: ann@example.org, webhook: "http://127.0.0.1:9/ann"}
  - {name: Bob, email: bob@example.org}
  - {name: Cid, email: cid@example.org}
"""

NOTIFY = """\
notifications:
  channels:
    - {id: mail, type: email, host: 127.0.0.1, port: 2525, starttls: false, from: eqmon@example.org}
    - {id: hook, type: webhook, url: "http://127.0.0.1:9/desk", secret_env: EQMON_TEST_HOOK_SECRET}
    - {id: log, type: log}
  routes:
    - {severity: [critical], locations: [Ward 4B], contacts: [Ann, Bob, Cid], via: [mail], escalate_after: 10m}
    - {severity: [critical, warning], channels: [hook]}
  repeat: {critical: 30m}
  storm: {max_alerts: 3, window: 1m}
"""


def _site(extra: str = NOTIFY) -> Any:
    return parse_site(BASE + extra, "site.yaml")


def _alert(id_: str = "a1", device: str = "fridge-1", severity: Severity = Severity.CRITICAL, **kw: Any) -> Alert:
    base: dict[str, Any] = dict(
        id=id_, rule_id="fridge-high", device_id=device, metric="temperature_c", severity=severity,
        state=AlertState.ACTIVE, message=f"CRITICAL Fridge ({device}): 9.1 °C above 8 °C", started_at=900.0, value=9.1,
    )  # fmt: skip
    base.update(kw)
    return Alert(**base)


def _to(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(r["channel"], r["recipient"]) for r in rows}


# -- the site file ----------------------------------------------------------------------------


def test_site_file_notifications_parse_and_errors_have_paths() -> None:
    site = _site()
    assert site.notifications is not None
    assert [c.type for c in site.notifications.channels] == ["email", "webhook", "log"]
    assert site.notifications.routes[0].escalate_after == 600.0
    bad = NOTIFY.replace("via: [mail]", "via: [fax]").replace("channels: [hook]", "channels: [hook, mail]")
    bad = bad.replace("type: log}", "type: log}\n    - {id: pager, type: mqtt, topic: pager/#}")
    with pytest.raises(ConfigError) as exc:
        _site(bad)
    lines = str(exc.value).splitlines()
    assert any("notifications.channels[3].topic: expected an MQTT topic to publish to" in x for x in lines), lines
    with pytest.raises(ConfigError) as exc:
        _site(NOTIFY.replace("via: [mail]", "via: [fax]").replace("channels: [hook]", "channels: [hook, mail]"))
    text = str(exc.value)
    assert "notifications.routes[0].via[0]: no channel with id 'fax'" in text
    assert "notifications.routes[1].channels[1]: channel 'mail' has no to of its own" in text
    assert "(line " in text
    with pytest.raises(ConfigError) as exc:
        _site(NOTIFY.replace("secret_env: EQMON_TEST_HOOK_SECRET", "secret: x"))
    assert "notifications.channels[1].secret: unknown key" in str(exc.value)


# -- routing on a fake clock ------------------------------------------------------------------


def test_routes_escalation_repeat_ack_and_resolved_notice() -> None:
    site = _site()
    p = NotificationPlanner(site, site.notifications, clock=lambda: 0.0)
    a = _alert()
    rows = p.on_change(a, "raised", 1000.0)
    assert _to(rows) == {("mail", "ann@example.org"), ("hook", "http://127.0.0.1:9/desk")}
    assert all(r["payload"]["schema"] == "eqmon.alert.v1" and r["payload"]["event"] == "raised" for r in rows)
    assert p.on_change(a, "raised", 1000.0) == rows or {r["message_id"] for r in rows}  # stable ids
    assert {r["message_id"] for r in p.on_change(a, "raised", 1000.0)} == {r["message_id"] for r in rows}
    assert p.due(1000.0 + 599) == []
    esc = p.due(1000.0 + 600)
    assert _to(esc) == {("mail", "bob@example.org")} and esc[0]["payload"]["event"] == "escalated"
    assert "ESCALATED (unacknowledged for 10 min)" in esc[0]["payload"]["text"]
    # a restarted planner plans the same escalation under the same id
    q = NotificationPlanner(site, site.notifications, clock=lambda: 0.0)
    q.restore(a, 1000.0)
    assert {r["message_id"] for r in q.due(1000.0 + 700) if r["payload"]["event"] == "escalated"} == {esc[0]["message_id"]}
    # repeat at 30 min to everyone called so far (Ann, Bob, Cid by then, and the desk hook)
    rep = [r for r in p.due(1000.0 + 1800) if r["payload"]["event"] == "repeated"]
    assert _to(rep) == {("mail", "ann@example.org"), ("mail", "bob@example.org"), ("mail", "cid@example.org"), ("hook", "http://127.0.0.1:9/desk")}
    # acknowledged: no more escalations or repeats
    acked = _alert(state=AlertState.ACKNOWLEDGED, acknowledged_at=1000.0 + 1900, acknowledged_by="Ann")
    assert p.on_change(acked, "acknowledged", 1000.0 + 1900) == []
    assert p.due(1000.0 + 3700) == []
    done = _alert(state=AlertState.RESOLVED, resolved_at=5000.0, acknowledged_at=1000.0 + 1900)
    res = p.on_change(done, "resolved", 5000.0)
    assert _to(res) == _to(rep) and all(r["payload"]["event"] == "resolved" for r in res)
    assert res[0]["payload"]["text"].startswith("RESOLVED after 67 min: CRITICAL Fridge")


def test_a_repeat_whose_rows_were_not_written_is_planned_again() -> None:
    """The service could not write the rows of repeat 1 (database away): the next call plans the
    same repeat again, under the same ids."""
    site = _site()
    p = NotificationPlanner(site, site.notifications, clock=lambda: 0.0)
    p.on_change(_alert(), "raised", 1000.0)
    first = [r for r in p.due(1000.0 + 1800) if r["payload"]["event"] == "repeated"]
    again = [r for r in p.due(1000.0 + 1801) if r["payload"]["event"] == "repeated"]
    assert first and {r["message_id"] for r in again} == {r["message_id"] for r in first}


def test_a_silenced_alert_notifies_nobody_until_its_silence_ends_then_escalates_from_then() -> None:
    site = _site()
    p = NotificationPlanner(site, site.notifications, clock=lambda: 0.0)
    quiet = {"id": "s1", "kind": "silence", "owner": "Sam", "reason": "defrost", "until": 4000.0}
    a = _alert(extra={"silenced": quiet})
    assert p.on_change(a, "raised", 1000.0) == []
    assert p.due(1000.0 + 3600) == []  # no escalation, no repeat while silenced
    loud = _alert()
    rows = p.on_change(loud, "unsilenced", 4000.0)
    assert _to(rows) == {("mail", "ann@example.org"), ("hook", "http://127.0.0.1:9/desk")}
    assert {r["payload"]["event"] for r in rows} == {"unsilenced"}
    assert rows[0]["payload"]["text"].startswith("SILENCE ENDED, still open: CRITICAL Fridge")
    assert p.due(4000.0 + 599) == []  # escalation counts from the end of the silence
    assert _to(p.due(4000.0 + 600)) == {("mail", "bob@example.org")}
    # silenced all its life: no resolved notice either
    b = _alert("b1", extra={"silenced": quiet})
    p.on_change(b, "raised", 1000.0)
    assert p.on_change(_alert("b1", state=AlertState.RESOLVED, resolved_at=2000.0), "resolved", 2000.0) == []


def test_an_incident_is_routed_by_its_location() -> None:
    site = _site()
    p = NotificationPlanner(site, site.notifications, clock=lambda: 0.0)
    incident = _alert("i1", device="location:Ward 4B", rule_id="incident-location", extra={"location": "Ward 4B"})
    rows = p.on_change(incident, "raised", 1000.0)
    assert ("mail", "ann@example.org") in _to(rows)  # the Ward 4B route
    assert rows[0]["payload"]["alert"]["location"] == "Ward 4B"


def test_a_repeat_planned_again_after_a_restart_goes_to_whom_it_was_for() -> None:
    """Repeat 1 at 15 min goes to those called by then (Ann, Bob, the desk). A planner restarted
    at 25 min — past Cid's escalation at 20 min — plans repeat 1 again (the outbox drops the
    same ids): to the same people, not to Cid as well (tests/test_notify_crash.py, for real)."""
    site = _site(NOTIFY.replace("repeat: {critical: 30m}", "repeat: {critical: 15m}"))
    a = _alert()
    p = NotificationPlanner(site, site.notifications, clock=lambda: 0.0)
    p.on_change(a, "raised", 1000.0)
    before = {r["message_id"] for r in p.due(1000.0 + 900) if r["payload"]["event"] == "repeated"}
    assert len(before) == 3
    q = NotificationPlanner(site, site.notifications, clock=lambda: 0.0)
    q.restore(a, 1000.0)
    after = q.due(1000.0 + 1500)
    assert {r["message_id"] for r in after if r["payload"]["event"] == "repeated"} == before
    assert _to([r for r in after if r["payload"]["event"] == "escalated"]) == {
        ("mail", "bob@example.org"), ("mail", "cid@example.org"),
    }  # fmt: skip


def test_location_and_severity_select_routes_and_storms_become_a_digest() -> None:
    site = _site()
    p = NotificationPlanner(site, site.notifications, clock=lambda: 0.0)
    icu = p.on_change(_alert("b1", device="fridge-2"), "raised", 10.0)
    assert _to(icu) == {("hook", "http://127.0.0.1:9/desk")}  # the Ward 4B route does not match
    assert p.on_change(_alert("b2", severity=Severity.INFO), "raised", 11.0) == []
    for i in range(2, 4):
        assert p.on_change(_alert(f"b{i + 1}", device="fridge-2"), "raised", 10.0 + i) != []
    held = [p.on_change(_alert(f"s{i}", device="fridge-2"), "raised", 14.0 + i) for i in range(5)]
    assert held == [[]] * 5 and p.digested == 5
    assert p.due(40.0) == []
    (digest,) = p.due(14.0 + 60)
    doc = digest["payload"]
    assert doc["event"] == "digest" and len(doc["alerts"]) == 5 and doc["alert"] is None
    assert doc["text"].startswith("5 more alerts within 1 min at St Test")


# -- delivery against real receivers ----------------------------------------------------------


def _engine(url: str) -> Engine:
    e = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    db.upgrade(e)
    return e


def _queue(engine: Engine, planner: NotificationPlanner, alerts: list[Alert], now: float) -> int:
    store = AlertStore(engine, clock=lambda: now)
    n = 0

    def also(conn: Any, kind: str, ts: float) -> None:
        nonlocal n
        n += queue_notifications(conn, planner.on_change(alert, kind, ts), ts)

    for alert in alerts:
        store.save(alert, also=also)
    return n


def _hook_site(url: str, extra: str = "") -> Any:
    return _site(f"""\
notifications:
  channels:
    - {{id: hook, type: webhook, url: "{url}", secret_env: EQMON_TEST_HOOK_SECRET, timeout: 2s}}
  routes:
    - {{severity: [critical, warning], channels: [hook]}}
  retry: {{initial: 0.2s, max: 0.5s, permanent_attempts: 2}}
{extra}""")


def _dispatcher(engine: Engine, site: Any, **kw: Any) -> Dispatcher:
    n = site.notifications
    return Dispatcher(OutboxRepo(engine), build_senders(n, **kw), n.retry, clock=time.time, poll_interval=0.1)


async def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.integration
def test_webhook_delivered_once_signed_and_retried_while_the_receiver_is_down(
    state_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EQMON_TEST_HOOK_SECRET", SECRET)
    engine = _engine(state_db)
    receiver = WebhookReceiver(secret=SECRET.encode())
    site = _hook_site(receiver.url)
    planner = NotificationPlanner(site, site.notifications, clock=time.time)
    repo = OutboxRepo(engine)
    try:
        receiver.start()
        now = time.time()
        assert _queue(engine, planner, [_alert("w1")], now) == 1
        assert _queue(engine, planner, [_alert("w1")], now) == 0  # saved again: nothing doubles

        async def first() -> None:
            d = _dispatcher(engine, site)
            d.start()
            await asyncio.to_thread(receiver.wait_for, 1)
            await _until(lambda: repo.list(state="sent") != [], 5, "the row marked sent")
            await asyncio.sleep(0.5)  # nothing more is sent
            await d.stop()

        asyncio.run(first())
        ((req,),) = receiver.by_message_id().values()
        assert req.signature_ok is True and verify(SECRET.encode(), req.body, req.headers["X-Eqmon-Signature"])
        doc = json.loads(req.body)
        assert doc["schema"] == "eqmon.alert.v1" and doc["event"] == "raised" and doc["site"] == "St Test"
        assert doc["message_id"] == req.headers["X-Eqmon-Message-Id"]
        assert doc["text"] == "CRITICAL Fridge (fridge-1): 9.1 °C above 8 °C"
        assert doc["alert"]["id"] == "w1" and doc["alert"]["location"] == "Ward 4B" and doc["alert"]["severity"] == "critical"
        assert req.headers["Content-Type"] == "application/json; charset=utf-8"

        # Down: nothing listens for ~2 s; the row is retried with backoff, delivered once it is back.
        receiver.stop()
        later = time.time()
        resolved = _alert("w1", state=AlertState.RESOLVED, resolved_at=later)
        assert _queue(engine, planner, [resolved], later) == 1

        async def down_then_up() -> None:
            d = _dispatcher(engine, site)
            d.start()
            await asyncio.sleep(2.0)
            (pending,) = repo.list(state="pending")
            assert pending.attempts >= 2 and pending.last_error and "Connection refused" in pending.last_error
            assert pending.next_attempt_at > time.time() - 1
            receiver.start()
            await asyncio.to_thread(receiver.wait_for, 2)
            await _until(lambda: repo.list(state="pending") == [], 5, "the row marked sent")
            await d.stop()

        asyncio.run(down_then_up())
        got = receiver.by_message_id()
        assert len(got) == 2 and all(len(v) == 1 for v in got.values())
        assert [json.loads(v[0].body)["event"] for v in got.values()] == ["raised", "resolved"]

        # 4xx other than 408/429: failed after permanent_attempts (2), logged once.
        receiver.statuses[:] = [404, 404, 404]
        assert _queue(engine, planner, [_alert("w2")], time.time()) == 1

        async def refused() -> None:
            d = _dispatcher(engine, site)
            d.start()
            await _until(lambda: repo.list(state="failed") != [], 5, "the row failed")
            await d.stop()

        asyncio.run(refused())
        (failed,) = repo.list(state="failed")
        assert failed.attempts == 2 and failed.last_error == "HTTP 404"
    finally:
        receiver.stop()
        engine.dispose()


@pytest.mark.integration
def test_stopped_mid_send_and_restarted_on_the_same_database_delivers_the_rest_none_twice(
    state_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EQMON_TEST_HOOK_SECRET", SECRET)
    engine = _engine(state_db)
    receiver = WebhookReceiver(secret=SECRET.encode(), delay=0.3)
    site = _hook_site(receiver.url)
    planner = NotificationPlanner(site, site.notifications, clock=time.time)
    repo = OutboxRepo(engine)
    try:
        receiver.start()
        assert _queue(engine, planner, [_alert(f"r{i}") for i in range(20)], time.time()) == 20

        async def run(stop_early: bool) -> None:
            d = Dispatcher(repo, build_senders(site.notifications), site.notifications.retry,
                           clock=time.time, poll_interval=0.1, max_in_flight=2)  # fmt: skip
            d.start()
            if stop_early:
                # stopped as soon as the first row is marked sent (a fixed sleep could end before
                # any send on a busy machine): with 0.3 s a request, 2 in flight, most are pending
                await _until(lambda: len(repo.list(state="sent")) >= 1, 20, "a first row sent")
                await d.stop(grace=0.0)  # cancelled mid-send
            else:
                await _until(lambda: repo.list(state="pending") == [], 20, "every row sent")
                await d.stop()

        asyncio.run(run(True))
        sent_before = {m.message_id for m in repo.list(state="sent")}
        assert 0 < len(sent_before) < 20
        asyncio.run(run(False))
        got = receiver.by_message_id()
        assert len(got) == 20 and {m.message_id for m in repo.list(state="sent")} == set(got)
        for mid in sent_before:  # what was marked sent is never sent again
            assert len(got[mid]) == 1
        # a send cancelled after the receiver took it may arrive twice: the id lets it be dropped
        assert sum(len(v) for v in got.values()) <= 20 + 2
        assert all(r.signature_ok for v in got.values() for r in v)
    finally:
        receiver.stop()
        engine.dispose()


class _CountingSender:
    """A sender that accepts every message once ``release`` is set, and records what it sent."""

    channel_id = "hook"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.release = asyncio.Event()

    async def send(self, msg: Any) -> None:
        await self.release.wait()
        self.sent.append(msg.message_id)


def test_a_row_sent_while_the_outbox_is_read_is_not_sent_again(tmp_path: Path) -> None:
    """The read of due rows can see a row as pending while its send is being marked: when the
    read returns, the send is done (no longer in flight), and the stale row must not go again."""
    engine = _engine(f"sqlite:///{tmp_path / 'state.sqlite'}")
    listed, go_on = threading.Event(), threading.Event()

    class SlowRead(OutboxRepo):
        hold = False

        def list(self, **kw: Any) -> Any:
            rows = super().list(**kw)
            if self.hold:  # the read is done; the caller gets it only later
                listed.set()
                go_on.wait(10)
            return rows

    repo = SlowRead(engine)
    repo.add(message_id="m1", channel="hook", recipient="r", payload={}, now=time.time())

    async def main() -> None:
        sender = _CountingSender()
        d = Dispatcher(repo, {"hook": sender}, Notifications().retry, clock=time.time)
        assert await d.run_once() == 1  # m1 in flight
        repo.hold = True
        second = asyncio.create_task(d.run_once())  # reads m1 as pending
        await asyncio.to_thread(listed.wait, 10)
        sender.release.set()
        await d.idle()  # m1 sent and marked
        go_on.set()
        assert await second == 0
        await d.idle()
        assert sender.sent == ["m1"]

    try:
        asyncio.run(main())
        m1 = repo.get("m1")
        assert m1 is not None and m1.state == "sent" and m1.attempts == 1
    finally:
        engine.dispose()


def test_a_row_queued_while_the_outbox_is_read_is_sent_at_once(tmp_path: Path) -> None:
    """A wake-up that comes while the dispatcher reads the outbox (the row was committed after
    the read began) starts the next round at once, not a poll interval later (here 60 s)."""
    engine = _engine(f"sqlite:///{tmp_path / 'state.sqlite'}")
    sender = _CountingSender()
    sender.release.set()
    loop_box: list[asyncio.AbstractEventLoop] = []
    dispatchers: list[Dispatcher] = []

    class QueueDuringRead(OutboxRepo):
        first = True

        def list(self, **kw: Any) -> Any:
            rows = super().list(**kw)
            if self.first:
                self.first = False
                self.add(message_id="m2", channel="hook", recipient="r", payload={}, now=time.time())
                loop_box[0].call_soon_threadsafe(dispatchers[0].wake)  # as Service._on_alert does
            return rows

    async def main() -> None:
        loop_box.append(asyncio.get_running_loop())
        d = Dispatcher(QueueDuringRead(engine), {"hook": sender}, Notifications().retry,
                       clock=time.time, poll_interval=60)  # fmt: skip
        dispatchers.append(d)
        d.start()
        try:
            await _until(lambda: sender.sent == ["m2"], 5, "the row queued during the read sent")
        finally:
            await d.stop()

    try:
        asyncio.run(main())
    finally:
        engine.dispose()


@pytest.mark.integration
def test_email_over_smtp_with_starttls_and_login(state_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EQMON_TEST_SMTP_PASSWORD", "pw")
    cert, key = self_signed_cert(tmp_path)
    engine = _engine(state_db)
    smtp = SmtpReceiver(tls_files=(cert, key), users={"eqmon": "pw"}, refuse={"cid@example.org"})
    site = _site(f"""\
notifications:
  channels:
    - {{id: mail, type: email, host: 127.0.0.1, port: {smtp.port}, starttls: true, ca_file: "{cert}",
       username: eqmon, password_env: EQMON_TEST_SMTP_PASSWORD, from: eqmon@example.org, timeout: 5s}}
  routes:
    - {{severity: [critical], contacts: [Ann, Cid]}}
  retry: {{initial: 0.2s, max: 0.5s, permanent_attempts: 2}}
""")
    planner = NotificationPlanner(site, site.notifications, clock=time.time)
    repo = OutboxRepo(engine)
    try:
        smtp.start()
        assert _queue(engine, planner, [_alert("m1")], time.time()) == 2

        async def run() -> None:
            d = _dispatcher(engine, site)
            d.start()
            await _until(lambda: repo.list(state="pending") == [], 10, "both rows done")
            await asyncio.sleep(0.3)
            await d.stop()

        asyncio.run(run())
        (mail,) = smtp.mails
        (sent,) = repo.list(state="sent")
        assert sent.recipient == "ann@example.org" and mail.rcpt_tos == ["ann@example.org"]
        assert mail.tls and mail.login == "eqmon" and mail.mail_from == "eqmon@example.org"
        m = mail.message
        assert m["Subject"] == "CRITICAL Fridge (fridge-1): 9.1 °C above 8 °C"
        assert m["Message-ID"] == f"<{sent.message_id}@eqmon>" and m["X-Eqmon-Message-Id"] == sent.message_id
        assert m["From"] == "eqmon@example.org" and m["To"] == "ann@example.org"
        (failed,) = repo.list(state="failed")  # 550 to Cid: permanent, failed after 2 attempts
        assert failed.recipient == "cid@example.org" and failed.attempts == 2 and "550" in (failed.last_error or "")
    finally:
        smtp.stop()
        engine.dispose()


@pytest.mark.integration
def test_mqtt_channel_publishes_with_puback_on_mosquitto(mosquitto: Any, tmp_path: Path) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from collectors.mqtt import MqttPublisher

    engine = _engine(f"sqlite:///{tmp_path / 'state.sqlite'}")
    site = _site(f"""\
mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, client_id: eqmon-test}}
notifications:
  channels:
    - {{id: pager, type: mqtt, topic: hospital/pager/ward-4b}}
  routes:
    - {{severity: [critical], channels: [pager]}}
  retry: {{initial: 0.2s, max: 0.5s}}
""")
    got: list[bytes] = []
    ready = threading.Event()
    sub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="pager-gateway")
    sub.on_connect = lambda c, *a: (c.subscribe("hospital/pager/#", qos=1), ready.set())
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    publisher = MqttPublisher(site.mqtt)
    repo = OutboxRepo(engine)
    try:
        assert ready.wait(5)
        planner = NotificationPlanner(site, site.notifications, clock=time.time)
        assert _queue(engine, planner, [_alert("q1")], time.time()) == 1

        async def run() -> None:
            publisher.start()
            d = _dispatcher(engine, site, publish=publisher.publish)
            d.start()
            await _until(lambda: repo.list(state="sent") != [], 10, "the row sent")
            await d.stop()

        asyncio.run(run())
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        (payload,) = got
        doc = json.loads(payload)
        assert doc["schema"] == "eqmon.alert.v1" and doc["alert"]["id"] == "q1"
        assert doc["message_id"] == repo.list(state="sent")[0].message_id
    finally:
        publisher.stop()
        sub.disconnect()
        sub.loop_stop()
        engine.dispose()


@pytest.mark.integration
def test_service_queues_with_the_alert_and_sends_after_a_restart(
    state_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eqmon_app.service import Service

    monkeypatch.setenv("EQMON_TEST_HOOK_SECRET", SECRET)
    receiver = WebhookReceiver(secret=SECRET.encode())
    site = _site(f"""\
api: {{host: 127.0.0.1, port: 0}}
notifications:
  channels:
    - {{id: hook, type: webhook, url: "{receiver.url}", secret_env: EQMON_TEST_HOOK_SECRET, timeout: 2s}}
    - {{id: log, type: log}}
  routes:
    - {{severity: [critical], channels: [hook, log]}}
  retry: {{initial: 0.2s, max: 0.5s}}
  poll_interval: 0.1s
""").model_copy(update={"database": Database(url=state_db)})

    async def first() -> None:
        service = Service(site, data_dir=tmp_path)
        await service.start()
        try:
            service.engine.raise_system("test-storm", Severity.CRITICAL, "CRITICAL test alert", time.time())
            # the rows were written with the alert, in its save
            rows = service.outbox.list()
            assert {r.channel for r in rows} == {"hook", "log"} and all(r.alert_id for r in rows)
        finally:
            await service.stop()  # receiver not listening: the webhook row stays pending

    asyncio.run(first())
    repo_engine = _engine(state_db)
    try:
        (pending,) = OutboxRepo(repo_engine).list(state="pending")
        assert pending.channel == "hook" and pending.attempts >= 1
    finally:
        repo_engine.dispose()

    async def second() -> None:
        receiver.start()
        service = Service(site, data_dir=tmp_path)
        await service.start()
        try:
            await asyncio.to_thread(receiver.wait_for, 1)
            await _until(lambda: service.outbox.list(state="pending") == [], 5, "the row sent")
            await asyncio.sleep(0.3)
        finally:
            await service.stop()

    try:
        asyncio.run(second())
    finally:
        receiver.stop()
    got = receiver.by_message_id()
    assert len(got) == 1 and all(len(v) == 1 for v in got.values())
    assert json.loads(next(iter(got.values()))[0].body)["alert"]["device_id"] == "eqmon"


def test_notifications_default_is_a_log_line() -> None:
    from eqmon.config import DEFAULT_NOTIFICATIONS

    assert isinstance(DEFAULT_NOTIFICATIONS, Notifications)
    assert [c.type for c in DEFAULT_NOTIFICATIONS.channels] == ["log"]


def test_a_webhook_peer_that_does_not_answer_http_is_a_delivery_failure_to_retry() -> None:
    """A real TCP peer on loopback that answers garbage and closes: a DeliveryError (retried,
    logged as the channel failing), not an unexpected exception with a traceback."""
    import socket

    from alerts.notify.channels import DeliveryError, WebhookSender
    from eqmon.config import WebhookChannel
    from eqmon.db.repos import OutboxMessage

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    sender = WebhookSender(WebhookChannel(id="hook", type="webhook", timeout=5.0))
    msg = OutboxMessage(
        id=1, message_id="m1", alert_id=None, channel="hook", recipient=f"http://127.0.0.1:{port}/x",
        payload={"text": "hi"}, state="pending", attempts=0, next_attempt_at=0.0, created_at=0.0,
    )  # fmt: skip
    try:
        with pytest.raises(DeliveryError) as exc:
            asyncio.run(sender.send(msg))
        assert not exc.value.permanent and "BadStatusLine" in str(exc.value)
    finally:
        t.join(5)
        srv.close()
