"""The state database (eqmon/db/) and the alert store on it, on SQLite and on a real PostgreSQL
(the ``state_db`` fixture runs each test on both): migrations from empty, the round trip, the
refusal of a newer schema (also through the CLI: one line, exit 2), the alert store and its
events, the import of an old alerts.sqlite, the repositories, the site-file key."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, inspect, text

from alerts.store import AlertStore, import_legacy_alerts
from eqmon import db
from eqmon.config import ConfigError, Database, parse_site
from eqmon.db import migrate
from eqmon.db.engine import create, database_url
from eqmon.db.repos import AuditLog, OutboxRepo, SilenceRepo
from eqmon.db.schema import metadata
from eqmon.domain import Alert, AlertState, Severity
from tests.sitefiles import modbus_site_file

ROOT = Path(__file__).resolve().parent.parent
TABLES = {
    "alerts", "alert_events", "silences", "notification_outbox", "audit_log", "eqmon_meta",
    "inventory_items", "inventory_locations", "inventory_bins", "inventory_ledger", "inventory_on_hand",
}  # fmt: skip


@pytest.fixture
def engine(state_db: str):
    e = create(state_db)
    try:
        yield e
    finally:
        e.dispose()


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    db.upgrade(engine)
    return engine


def _alert(id_: str = "a1", **kw: object) -> Alert:
    base: dict[str, object] = dict(
        id=id_, rule_id="fridge-high", device_id="fridge-1", metric="temperature_c",
        severity=Severity.CRITICAL, state=AlertState.ACTIVE, message="CRITICAL Fridge 1: 9.1 °C",
        started_at=1000.0, value=9.1,
    )  # fmt: skip
    base.update(kw)
    return Alert(**base)  # type: ignore[arg-type]


# -- migrations --------------------------------------------------------------------------------


def test_upgrade_from_empty_builds_exactly_the_schema(engine: Engine) -> None:
    assert db.current(engine) is None
    assert db.upgrade(engine) == (None, db.HEAD)
    assert db.current(engine) == db.HEAD
    assert TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == [], "the migrations and eqmon/db/schema.py disagree"
    assert db.upgrade(engine) == (db.HEAD, db.HEAD)  # a second start changes nothing
    indexes = {i["name"] for i in inspect(engine).get_indexes("alerts")}
    assert {"ix_alerts_open", "ix_alerts_started_at"} <= indexes


def test_downgrade_and_upgrade_round_trip(migrated: Engine) -> None:
    AlertStore(migrated).save(_alert())
    migrate.downgrade(migrated, "base")
    assert db.current(migrated) is None
    assert not TABLES & set(inspect(migrated).get_table_names())
    assert db.upgrade(migrated) == (None, db.HEAD)
    assert AlertStore(migrated).recent() == []


def test_a_newer_schema_is_refused_and_left_alone(migrated: Engine) -> None:
    with migrated.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0042_future'"))
    with pytest.raises(db.SchemaTooNew) as exc:
        db.upgrade(migrated)
    line = str(exc.value)
    assert "\n" not in line and "0042_future" in line and db.HEAD in line
    assert db.redacted(migrated) in line
    with pytest.raises(db.SchemaTooNew):
        db.current(migrated)
    with migrated.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0042_future"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # --log-level error: the example site's warnings (logged at start-up) stay out of stderr
        [sys.executable, "-m", "eqmon_app.cli", "--log-level", "error", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_cli_db_commands_and_run_refusing_a_newer_schema(state_db: str, tmp_path: Path) -> None:
    site = modbus_site_file(tmp_path, state_db)
    common = ["--config", str(site), "--data-dir", str(tmp_path / "data")]
    r = _cli("db", "current", *common)
    assert r.returncode == 0 and "empty" in r.stdout, r.stderr
    r = _cli("db", "upgrade", *common)
    assert r.returncode == 0 and f"upgraded from empty to {db.HEAD}" in r.stdout, r.stderr
    r = _cli("db", "upgrade", *common)
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stderr
    r = _cli("db", "current", *common)
    assert r.returncode == 0 and f"at revision {db.HEAD} (head)" in r.stdout, r.stderr

    e = create(state_db)
    try:
        with e.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffff0000'"))
    finally:
        e.dispose()
    for args in (["run", *common, "--duration", "1"], ["db", "upgrade", *common], ["db", "current", *common]):
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert "ffff0000" in lines[0] and db.HEAD in lines[0] and "state database" in lines[0]
        assert db.redacted(state_db).split("/")[-1] in lines[0]  # the database, by name


def test_state_sqlite_in_the_data_dir_is_the_default(tmp_path: Path) -> None:
    r = _cli("db", "upgrade", "--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "state.sqlite").exists()
    from tests.test_api_support import api_on_built_service

    with api_on_built_service(tmp_path / "svc") as api:
        assert db.redacted(api.service.db) == f"sqlite:///{(tmp_path / 'svc' / 'state.sqlite').resolve()}"
        assert db.current(api.service.db) == db.HEAD


# -- the alert store ------------------------------------------------------------------------


def test_alert_store_saves_states_and_one_event_per_change(migrated: Engine) -> None:
    now = [5000.0]
    store = AlertStore(migrated, clock=lambda: now[0])
    transactions: list[object] = []
    event.listen(migrated, "begin", transactions.append)

    a = _alert()
    store.save(a)
    assert len(transactions) == 1  # one transaction per save
    store.save(a)  # nothing changed: no event
    a.state, a.acknowledged_at, a.acknowledged_by = AlertState.ACKNOWLEDGED, 5100.0, "Nurse Joy"
    a.extra["ack_note"] = "moved the vaccines"
    store.save(a)
    now[0] = 5200.0
    a.message += " — condition now unknown"
    a.extra["condition_unknown_since"] = 5190.0
    store.save(a)
    b = _alert("b2", rule_id="device-offline", metric="", value=None, started_at=2000.0, message="WARNING offline")
    store.save(b)
    assert len(transactions) == 5

    assert [x.id for x in store.open_alerts()] == ["a1", "b2"]  # oldest first
    got = store.get("a1")
    assert got is not None and got.state == AlertState.ACKNOWLEDGED and got.acknowledged_by == "Nurse Joy"
    assert got.extra == {"ack_note": "moved the vaccines", "condition_unknown_since": 5190.0}
    assert got.value == pytest.approx(9.1) and got.severity == Severity.CRITICAL

    a.state, a.resolved_at = AlertState.RESOLVED, 6000.0
    store.save(a)
    assert [x.id for x in store.open_alerts()] == ["b2"]
    assert [x.id for x in store.recent()] == ["b2", "a1"]  # newest first
    assert [x.id for x in store.recent(limit=1)] == ["b2"]
    events = store.events("a1")
    assert [(e["kind"], e["ts"], e["actor"]) for e in events] == [
        ("raised", 5000.0, "eqmon"),
        ("acknowledged", 5100.0, "Nurse Joy"),
        ("changed", 5200.0, "eqmon"),
        ("resolved", 6000.0, "eqmon"),
    ]
    assert events[1]["note"] == "moved the vaccines"
    assert [e["kind"] for e in store.events("b2")] == ["raised"]


def test_open_alerts_survive_a_new_engine(state_db: str) -> None:
    e1 = create(state_db)
    db.upgrade(e1)
    AlertStore(e1).save(_alert())
    e1.dispose()
    e2 = create(state_db)
    try:
        db.upgrade(e2)
        assert [a.id for a in AlertStore(e2).open_alerts()] == ["a1"]
    finally:
        e2.dispose()


# -- alerts.sqlite from before ----------------------------------------------------------------

OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    rule_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL,
    started_at REAL NOT NULL,
    value REAL,
    resolved_at REAL,
    acknowledged_at REAL,
    acknowledged_by TEXT,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (state, started_at);
"""


def _old_alerts_file(data_dir: Path) -> Path:
    path = data_dir / "alerts.sqlite"
    old = sqlite3.connect(path)
    old.execute("PRAGMA journal_mode=WAL")
    old.executescript(OLD_SCHEMA)
    with old:
        old.executemany(
            "INSERT INTO alerts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                ("o1", "fridge-high", "fridge-1", "temperature_c", "critical", "active", "open one", 100.0, 9.5, None, None, None, "{}"),
                ("k2", "device-offline", "warmer-1", "", "warning", "acknowledged", "acked", 200.0, None, None, 250.0, "Sam", '{"ack_note": "on it"}'),
                ("r3", "fridge-high", "fridge-2", "temperature_c", "critical", "resolved", "done", 50.0, 8.4, 90.0, None, None, "{}"),
            ],
        )  # fmt: skip
    old.close()
    return path


def test_old_alerts_sqlite_is_imported_once(engine: Engine, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    old = _old_alerts_file(data_dir)
    db.upgrade(engine)
    store = AlertStore(engine)
    store.save(_alert("r3", state=AlertState.RESOLVED, resolved_at=99.0, message="newer"))  # already here: kept

    assert import_legacy_alerts(engine, data_dir) == 2
    assert not old.exists() and (data_dir / "alerts.sqlite.imported").exists()
    assert [a.id for a in store.open_alerts()] == ["o1", "k2"]
    k2 = store.get("k2")
    assert k2 is not None and k2.acknowledged_by == "Sam" and k2.extra == {"ack_note": "on it"}
    assert k2.value is None and k2.state == AlertState.ACKNOWLEDGED
    r3 = store.get("r3")
    assert r3 is not None and r3.message == "newer"
    assert [(e["kind"], e["ts"], e["actor"]) for e in store.events("k2")] == [
        ("raised", 200.0, "eqmon"),
        ("acknowledged", 250.0, "Sam"),
    ]

    # A second start: nothing to import. The same file back (restored from a backup): the
    # marker says it was imported; it is set aside again, nothing doubled.
    assert import_legacy_alerts(engine, data_dir) == 0
    (data_dir / "alerts.sqlite.imported").rename(old)
    assert import_legacy_alerts(engine, data_dir) == 0
    assert not old.exists()
    assert len(store.recent()) == 3 and len(store.events("o1")) == 1


def test_service_migrates_imports_and_disposes_the_engine(
    state_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests import test_api_support
    from tests.test_api_support import api_on_built_service

    built = test_api_support.modbus_only_site
    monkeypatch.setattr(
        test_api_support, "modbus_only_site", lambda: built().model_copy(update={"database": Database(url=state_db)})
    )
    _old_alerts_file(tmp_path)
    disposed: list[bool] = []
    with api_on_built_service(tmp_path) as api:
        service = api.service
        assert (tmp_path / "alerts.sqlite.imported").exists() and not (tmp_path / "alerts.sqlite").exists()
        assert db.redacted(service.db) == db.redacted(state_db)
        assert db.current(service.db) == db.HEAD
        assert {a.id for a in service.engine.active()} == {"o1", "k2"}  # open alerts carried over
        body = api.get("/api/v1/alerts").json()["items"]
        assert {a["id"] for a in body} == {"o1", "k2", "r3"}
        original = service.db.dispose
        service.db.dispose = lambda *a, **k: (disposed.append(True), original(*a, **k))[1]  # type: ignore[method-assign]
    assert disposed == [True]


# -- repositories -----------------------------------------------------------------------------


def test_silences(migrated: Engine) -> None:
    repo = SilenceRepo(migrated)
    s1 = repo.add(owner="Facilities", reason="defrost", starts_at=100.0, ends_at=200.0, device_id="fridge-1", created_at=90.0)
    s2 = repo.add(owner="IT", reason="network work", starts_at=150.0, ends_at=400.0, location="Pharmacy")
    assert [s.id for s in repo.list()] == [s2.id, s1.id]
    assert {s.id for s in repo.list(active_at=160.0)} == {s1.id, s2.id}
    assert [s.id for s in repo.list(active_at=250.0)] == [s2.id]
    assert repo.list()[1] == s1
    assert s1.matches(device_id="fridge-1", location=None, rule_id="x", at=150.0)
    assert not s1.matches(device_id="fridge-2", location=None, rule_id="x", at=150.0)
    assert repo.cancel(s2.id, at=170.0) and not repo.cancel(s2.id)
    assert [s.id for s in repo.list(active_at=180.0)] == [s1.id]
    with pytest.raises(ValueError):
        repo.add(owner="x", reason="y", starts_at=1.0, ends_at=2.0)
    with pytest.raises(ValueError):
        repo.add(owner="x", reason="y", starts_at=2.0, ends_at=2.0, rule_id="r")


def test_notification_outbox(migrated: Engine) -> None:
    AlertStore(migrated).save(_alert())
    repo = OutboxRepo(migrated)
    payload = {"subject": "CRITICAL Fridge 1", "lines": ["9.1 °C"]}
    assert repo.add(message_id="a1:raised:email:x@h", channel="email", recipient="x@h", payload=payload, alert_id="a1", now=10.0)
    assert not repo.add(message_id="a1:raised:email:x@h", channel="email", recipient="x@h", payload=payload, now=11.0)
    assert repo.add(message_id="a1:raised:sms:+1", channel="sms", recipient="+1", payload={}, now=12.0)
    (first, second) = repo.list()
    assert first.payload == payload and first.state == "pending" and first.attempts == 0 and first.alert_id == "a1"
    assert [m.message_id for m in repo.list(due_at=11.0)] == [first.message_id]
    repo.mark_failed(first.message_id, "SMTP 451", retry_at=70.0)
    repo.mark_sent(second.message_id, at=13.0)
    assert repo.list(due_at=20.0) == []
    (m,) = repo.list(due_at=70.0)
    assert m.attempts == 1 and m.last_error == "SMTP 451"
    repo.mark_failed(first.message_id, "SMTP 550", retry_at=None)
    assert [x.message_id for x in repo.list(state="failed")] == [first.message_id]
    (sent,) = repo.list(state="sent")
    assert sent.sent_at == 13.0


def test_audit_log(migrated: Engine) -> None:
    log = AuditLog(migrated)
    log.add(actor="Nurse Joy", action="alert.acknowledge", subject="alert:a1", detail={"note": "on it"}, ts=1.0)
    log.add(actor="admin", action="silence.add", subject="device:fridge-1", ts=2.0)
    entries = log.list()
    assert [(e.actor, e.action) for e in entries] == [("admin", "silence.add"), ("Nurse Joy", "alert.acknowledge")]
    assert entries[1].detail == {"note": "on it"} and entries[0].detail == {}
    assert [e.ts for e in log.list(subject="alert:a1")] == [1.0]
    assert [e.ts for e in log.list(since=1.5)] == [2.0]


# -- the site file ----------------------------------------------------------------------------

SITE = """site: {name: x}
devices:
  - {id: a, kind: k, protocol: modbus, host: 127.0.0.1, registers: [{name: t, address: 0}]}
database:
  %s
"""


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("url: mysql://u@h/db", "database.url: expected sqlite:///FILE or postgresql+psycopg://"),
        ("url: 'postgresql://u:hunter2@h/db'", "database.url: the password never lives in the site file"),
        ("url: 'sqlite://'", "database.url: sqlite needs a file"),
        ("url: postgresql+psycopg://u@h:5432", "database.url: name the database"),
        ("password_env: PW", "database: password_env: a SQLite database has no password"),
    ],
)
def test_bad_database_sections_name_file_path_and_line(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_site(SITE % line, "site.yaml")
    rendered = exc.value.render()
    assert rendered.startswith(f"site.yaml: {message}") and "(line " in rendered
    assert "hunter2" not in rendered


def test_database_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = database_url(Database(), tmp_path)
    assert default.get_backend_name() == "sqlite" and default.database == str((tmp_path / "state.sqlite").resolve())
    rel = database_url(Database(url="sqlite:///sub/s.db"), tmp_path)
    assert rel.database == str((tmp_path / "sub" / "s.db").resolve())
    assert database_url(Database(url="sqlite:////abs/s.db"), tmp_path).database == "/abs/s.db"
    pg = Database(url="postgresql://eqmon@db.example:5432/eqmon", password_env="EQMON_DB_PW")
    with pytest.raises(ValueError, match="EQMON_DB_PW is not set"):
        database_url(pg, tmp_path)
    monkeypatch.setenv("EQMON_DB_PW", "s3cret")
    url = database_url(pg, tmp_path)
    assert url.drivername == "postgresql+psycopg" and url.password == "s3cret"
    assert "s3cret" not in db.redacted(url)


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    e = db.open_engine(Database(), tmp_path)
    try:
        with e.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    finally:
        e.dispose()


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    from simulators.servers import free_port

    e = create(f"postgresql+psycopg://eqmon@127.0.0.1:{free_port()}/eqmon")
    try:
        t0 = time.monotonic()
        with pytest.raises(db.DatabaseUnavailable) as exc:
            db.upgrade(e)
        assert time.monotonic() - t0 < 15
        assert "\n" not in str(exc.value) and "cannot use the state database" in str(exc.value)
    finally:
        e.dispose()
