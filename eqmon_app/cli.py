"""The `eqmon` command: check-config, run, simulate, demo, db (upgrade, current), report, inventory
(status, pick-list, verify, import, export)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eqmon.config import (
    ConfigError,
    ConfigIssue,
    Database,
    LogChannel,
    MqttBroker,
    Notifications,
    Route,
    Site,
    load_site,
    render_issues,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from simulators import SimulatedSite

EXAMPLE_SITE = Path(__file__).resolve().parent.parent / "examples" / "site.yaml"
# The demo compresses alert delays: 60 min of excursion before an alert becomes 30 s.
DEMO_DELAY_SCALE = 120.0

log = logging.getLogger("eqmon")


LOG_LEVELS = ("debug", "info", "warning", "error")


def _setup_logging(level: str) -> None:
    """eqmon's own lines at ``level``; the libraries' (pymodbus, APScheduler, amqtt, uvicorn)
    only from warnings up, except with ``debug``: pymodbus logs every failed poll and hex dumps
    at ERROR, and eqmon promises one line per change of a device's state (collectors/modbus.py
    keeps pymodbus quiet unless its logger was opened here)."""
    debug = level == "debug"
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("apscheduler", "amqtt", "transitions", "uvicorn.error", "alembic"):
        logging.getLogger(noisy).setLevel(logging.INFO if debug else logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    logging.getLogger("apscheduler.executors").setLevel(logging.ERROR)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop: uvloop when it is installed (pymodbus's request costs far less CPU on it,
    which decides how many Modbus devices one core can poll; docs/performance.md), asyncio's own
    loop otherwise or when EQMON_EVENT_LOOP=asyncio."""
    if os.environ.get("EQMON_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _load(path: str, *, warnings: list[ConfigIssue] | None = None) -> Site:
    """The validated site, simulator sections and scenario included; a bad file exits 2. Its
    warnings go to ``warnings`` when given, else to the log (once, at start-up)."""
    found: list[ConfigIssue] = []
    try:
        site = load_site(path, warnings=found)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        raise SystemExit(2) from None
    if warnings is not None:
        warnings.extend(found)
    else:
        for line in render_issues(path, found):
            log.warning("%s", line)
    return site


def _simulated_site(site: Site, path: str, *, mqtt_host: str | None, mqtt_port: int | None) -> SimulatedSite | None:
    """The simulated devices, or None (said on stderr). The site file's models have checked the
    simulator sections: a simulator refusing them anyway is a site-file error, not a traceback."""
    from simulators import SimulatedSite

    try:
        return SimulatedSite(site, mqtt_host=mqtt_host, mqtt_port=mqtt_port)
    except (ValueError, KeyError) as exc:
        print(f"{path}: simulators: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return None


@contextlib.asynccontextmanager
async def _stop_signal(duration: float | None) -> AsyncIterator[asyncio.Event]:
    """An event set by SIGINT, SIGTERM or the end of ``duration``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    timer = loop.call_later(duration, stop.set) if duration else None
    try:
        yield stop
    finally:
        if timer:
            timer.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# ---------------------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    warnings: list[ConfigIssue] = []
    site = _load(args.file, warnings=warnings)
    for line in render_issues(args.file, warnings, warning=True):
        print(line)
    if args.plan:
        from collectors.modbus import describe_plan, probe_plans

        if getattr(args, "probe", False):  # contact each device once: what it rejects, the plan then
            for lines in asyncio.run(probe_plans(site.modbus_devices())):
                print("\n".join(lines), flush=True)
        else:
            for d in site.modbus_devices():
                print("\n".join(describe_plan(d)))
    if site.inventory is not None:
        print(site.inventory.summary())
    print("ok")
    return 0


async def _run(args: argparse.Namespace) -> int:
    from eqmon_app.service import Service

    site = _load(args.config)
    try:
        service = Service(site, data_dir=Path(args.data_dir))
    except ValueError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 2
    async with _stop_signal(args.duration) as stop:
        await service.start()
        print(f"eqmon running for {site.site.name}: {len(site.devices)} devices; API {service.api_url}", flush=True)
        await stop.wait()
        print("stopping…", flush=True)
        await service.stop()
    return 0


def _state_engine(args: argparse.Namespace) -> Engine | None:
    """The state database of ``--config`` (its `database:`) or of ``--data-dir`` (SQLite);
    None, after one line on stderr, when the site file names a password variable not set."""
    from eqmon import db

    cfg = _load(args.config).database if args.config else Database()
    try:
        return db.open_engine(cfg, Path(args.data_dir))
    except ValueError as exc:  # password_env not set
        print(f"{args.config}: {exc}", file=sys.stderr)
        return None


def cmd_db(args: argparse.Namespace) -> int:
    """``eqmon db upgrade``: migrate the state database to this eqmon's schema (what ``run`` does
    at start-up). ``eqmon db current``: its revision. Exit 2 for a schema newer than this eqmon,
    1 when the database cannot be reached."""
    from eqmon import db

    engine = _state_engine(args)
    if engine is None:
        return 2
    try:
        name = db.redacted(engine)
        if args.db_command == "upgrade":
            before, after = db.upgrade(engine)
            if before == after:
                print(f"{name}: at revision {after} (head), nothing to do")
            else:
                print(f"{name}: upgraded from {before or 'empty'} to {after} (head)")
        else:
            rev = db.current(engine)
            if rev is None:
                print(f"{name}: empty (never migrated; this eqmon's head is {db.HEAD})")
            else:
                print(f"{name}: at revision {rev}" + (" (head)" if rev == db.HEAD else f" (head is {db.HEAD}: run eqmon db upgrade)"))
    except db.SchemaTooNew as exc:
        print(f"eqmon db {args.db_command}: {exc}", file=sys.stderr)
        return 2
    except db.StateDatabaseError as exc:
        print(f"eqmon db {args.db_command}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    """``eqmon user add NAME --role ROLE``: a user who can log in to the API and the dashboard
    (prints the password made for it, unless ``--password-stdin``); ``list``; ``token NAME``: a
    new API token for it (printed once); ``disable NAME``; ``revoke TOKEN_ID``. Exit 1 when the
    user exists or is missing, 2 for a bad site file."""
    from dashboard_api.auth import Authenticator, hash_password, new_password
    from eqmon import db
    from eqmon.db.repos import AuditLog, UserExists, UserRepo

    engine = _state_engine(args)
    if engine is None:
        return 2
    try:
        db.upgrade(engine)
        auth = Authenticator(UserRepo(engine))
        audit = AuditLog(engine)
        actor = f"cli:{getpass.getuser()}"
        if args.user_command == "add":
            password = sys.stdin.readline().rstrip("\n") if args.password_stdin else new_password()
            if len(password) < 12:
                print(
                    "eqmon user add: the password must have at least 12 characters", file=sys.stderr
                )
                return 1
            try:
                user = auth.add_user(args.name, args.role, password)
            except UserExists as exc:
                print(f"eqmon user add: {exc}", file=sys.stderr)
                return 1
            audit.add(
                actor=actor,
                action="user.create",
                subject=f"user:{user.name}",
                detail={"role": user.role},
            )
            print(
                f"user {user.name} ({user.role}) added"
                + ("" if args.password_stdin else f"; password: {password}")
            )
        elif args.user_command == "list":
            for u in auth.users.all():
                print(f"{u.name}\t{u.role}" + ("\tdisabled" if u.disabled else ""))
        elif args.user_command == "token":
            found = auth.users.get(args.name)
            if found is None:
                print(f"eqmon user token: no user {args.name!r}", file=sys.stderr)
                return 1
            ttl = None if args.days is None else args.days * 86400
            token, record = auth.issue(found, "api", label=args.label, ttl=ttl)
            audit.add(
                actor=actor,
                action="token.create",
                subject=f"user:{found.name}",
                detail={"token_id": record.id, "label": args.label},
            )
            print(f"token {record.id} for {found.name} ({found.role}): {token}")
        elif args.user_command == "disable":
            if auth.users.update(args.name, disabled=True) is None:
                print(f"eqmon user disable: no user {args.name!r}", file=sys.stderr)
                return 1
            audit.add(
                actor=actor,
                action="user.change",
                subject=f"user:{args.name}",
                detail={"disabled": True},
            )
            print(f"user {args.name} disabled")
        elif args.user_command == "password":
            password = sys.stdin.readline().rstrip("\n") if args.password_stdin else new_password()
            if auth.users.update(args.name, password_hash=hash_password(password)) is None:
                print(f"eqmon user password: no user {args.name!r}", file=sys.stderr)
                return 1
            audit.add(
                actor=actor,
                action="user.change",
                subject=f"user:{args.name}",
                detail={"password": "changed"},
            )
            print(
                f"user {args.name}: password changed"
                + ("" if args.password_stdin else f"; password: {password}")
            )
        else:  # revoke
            if not auth.revoke(args.token_id):
                print(f"eqmon user revoke: no unrevoked token {args.token_id!r}", file=sys.stderr)
                return 1
            audit.add(actor=actor, action="token.revoke", subject=f"token:{args.token_id}")
            print(f"token {args.token_id} revoked")
    except db.StateDatabaseError as exc:
        print(f"eqmon user {args.user_command}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def _user_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "user",
        help="users of the API and dashboard (state database): add, list, token, disable, password, revoke",
    )
    usub = p.add_subparsers(dest="user_command", required=True)
    roles = ("coordinator", "supply", "viewer", "admin")
    q = usub.add_parser("add", help="add a user with a role; prints the password made for it")
    q.add_argument("name")
    q.add_argument("--role", required=True, choices=roles)
    q.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password (12+ characters) from stdin",
    )
    usub.add_parser("list", help="users and their roles")
    q = usub.add_parser(
        "token", help="a new API token for a user (machines: Prometheus, scripts); printed once"
    )
    q.add_argument("name")
    q.add_argument("--label", default="", help="what it is for")
    q.add_argument(
        "--days", type=float, default=None, help="valid for DAYS (default: until revoked)"
    )
    q = usub.add_parser("disable", help="the user can no longer log in; its tokens stop working")
    q.add_argument("name")
    q = usub.add_parser(
        "password", help="set a new password (made for it and printed, or --password-stdin)"
    )
    q.add_argument("name")
    q.add_argument("--password-stdin", action="store_true")
    q = usub.add_parser("revoke", help="revoke an API or session token by its id")
    q.add_argument("token_id")
    for q in usub.choices.values():
        q.add_argument(
            "--config",
            default=None,
            help="site file (its `database:`); default: SQLite in the data directory",
        )
        q.add_argument("--data-dir", default="data")




def cmd_report(args: argparse.Namespace) -> int:
    """``eqmon report shift|excursions|alert-volume``: read the alert history in the state
    database (never migrating or creating it). Times are Unix seconds or ISO 8601 local to the
    site (``site.timezone`` of ``--config``; UTC without one). Without ``--since``/``--until``:
    the current shift (shift, excursions) or the last 7 days (alert-volume); a missing
    ``--until`` is now, a missing ``--since`` 12 hours (7 days) before ``--until``
    (``reports.report_period``, as the API's). A bad time: one line, exit 2; a database
    missing, empty or out of reach: one line, exit 1."""
    import time

    from sqlalchemy.exc import SQLAlchemyError

    from alerts import reports
    from eqmon import db
    from eqmon.db.engine import database_url

    what = f"eqmon report {args.report}"
    site = _load(args.config, warnings=[]) if args.config else None  # the site file's warnings are for run
    tz = site.site.timezone if site else "UTC"
    now = time.time()
    times: dict[str, float | None] = {}
    for flag, text in (("--since", args.since), ("--until", args.until)):
        try:
            times[flag] = None if text is None else reports.parse_time(text, tz)
        except ValueError as exc:
            print(f"{what}: {flag}: {exc}", file=sys.stderr)
            return 2
    try:
        period = reports.report_period(args.report, times["--since"], times["--until"], tz, now=now)
    except reports.EmptyPeriod as exc:
        print(f"{what}: --since must be before --until ({exc.period.describe()})", file=sys.stderr)
        return 2

    cfg = site.database if site else Database()
    data_dir = Path(args.data_dir)
    try:
        url = database_url(cfg, data_dir)
    except ValueError as exc:  # password_env not set
        print(f"{what}: {args.config}: {exc}", file=sys.stderr)
        return 2
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
        print(f"{what}: no state database at {url.database} (check --data-dir or --config)", file=sys.stderr)
        return 1
    engine = db.open_engine(cfg, data_dir)
    try:
        rev = db.current(engine)
        if rev is None:
            print(f"{what}: state database {db.redacted(engine)} is empty (never migrated): no alerts", file=sys.stderr)
            return 1
        if rev != db.HEAD:
            print(f"{what}: state database {db.redacted(engine)} is at revision {rev}, not {db.HEAD}: run eqmon db upgrade", file=sys.stderr)
            return 2
        report = reports.make_report(engine, args.report, period, now=now)
    except db.SchemaTooNew as exc:
        print(f"{what}: {exc}", file=sys.stderr)
        return 2
    except db.StateDatabaseError as exc:
        print(f"{what}: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:  # lost half-way through the report's queries
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        print(f"{what}: cannot read the state database {db.redacted(engine)}: {detail[0] if detail else exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if args.csv:
        sys.stdout.write(reports.render_csv(report))
    elif args.json:
        sys.stdout.write(reports.render_json(report))
    else:
        sys.stdout.write(reports.render_text(report))
    return 0


# -- eqmon inventory … (status, pick-list, verify) ---------------------------------------------


def _inventory_parsers(sub: Any) -> Any:
    """``eqmon inventory …``: its subcommands' parsers (more may be added to the group returned)."""
    p = sub.add_parser("inventory", help="supplies: stock status, pick list, ledger check (state database)")
    isub = p.add_subparsers(dest="inventory_command", required=True)
    for name, what in (
        ("status", "stock per bin: level, use per day, days of supply, predicted stock-out"),
        ("pick-list", "what to bring to which room to reach par, in whole packs, most urgent first"),
        ("verify", "check that on-hand is the sum of the ledger; exit 1 with the bins that disagree"),
    ):
        q = isub.add_parser(name, help=what)
        q.add_argument("--config", required=True, help="site file (its `database:` and time zone)")
        q.add_argument("--data-dir", default="data")
        if name == "status":
            q.add_argument("--location", type=int, default=None, help="only the bins under this location id")
            q.add_argument("--json", action="store_true", help="JSON")
        if name == "pick-list":
            fmt = q.add_mutually_exclusive_group()
            fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
            fmt.add_argument("--json", action="store_true", help="JSON")
            q.add_argument("--top-up", action="store_true", help="every bin below par, not only below its reorder point")
    return isub


def cmd_inventory(args: argparse.Namespace) -> int:
    """``eqmon inventory status|pick-list|verify``: read the state database (never migrating or
    creating it). A database missing, empty or out of reach: one line, exit 1; a schema of
    another eqmon: exit 2."""
    import time
    from dataclasses import asdict

    from sqlalchemy.exc import SQLAlchemyError

    from eqmon import db
    from eqmon.db.engine import database_url
    from inventory import picklist, status
    from inventory.errors import InventoryError
    from inventory.ledger import Ledger

    what = f"eqmon inventory {args.inventory_command}"
    site = _load(args.config, warnings=[])
    data_dir = Path(args.data_dir)
    try:
        url = database_url(site.database, data_dir)
    except ValueError as exc:  # password_env not set
        print(f"{what}: {args.config}: {exc}", file=sys.stderr)
        return 2
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
        print(f"{what}: no state database at {url.database} (check --data-dir or --config)", file=sys.stderr)
        return 1
    engine = db.open_engine(site.database, data_dir)
    now = time.time()
    try:
        rev = db.current(engine)
        if rev != db.HEAD:
            why = "is empty (never migrated)" if rev is None else f"is at revision {rev}, not {db.HEAD}: run eqmon db upgrade"
            print(f"{what}: state database {db.redacted(engine)} {why}", file=sys.stderr)
            return 1 if rev is None else 2
        if args.inventory_command == "verify":
            bad = Ledger(engine).verify()
            for m in bad:
                print(f"item {m.item_id} at location {m.location_id}: on hand {m.on_hand}, ledger sum {m.ledger_sum}, "
                      f"last balance {m.last_balance}")  # fmt: skip
            print(f"{len(bad)} bins disagree with the ledger" if bad else "ok: on-hand is the sum of the ledger in every bin")
            return 1 if bad else 0
        statuses = status.bin_statuses(engine, now=now, location_id=getattr(args, "location", None))
    except InventoryError as exc:
        print(f"{what}: {exc}", file=sys.stderr)
        return 2
    except db.StateDatabaseError as exc:
        print(f"{what}: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        print(f"{what}: cannot read the state database {db.redacted(engine)}: {detail[0] if detail else exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if args.inventory_command == "status":
        if args.json:
            data = {"generated_at": now, "bins": [{**asdict(s), "subject": s.subject} for s in statuses]}
            sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        else:
            for s in statuses:
                days = "-" if s.days_of_supply is None else f"{s.days_of_supply:.1f} d"
                print(f"{s.level:13} {s.path} | {s.name} ({s.sku}): {s.on_hand} (min {s.min_qty}, reorder {s.reorder_point}, "
                      f"par {s.par}); {s.use_per_day:.1f}/day, {days} of supply")  # fmt: skip
        return 0
    lines = picklist.pick_list(statuses, now=now, top_up=args.top_up)
    if args.csv:
        sys.stdout.write(picklist.render_csv(lines))
    elif args.json:
        sys.stdout.write(picklist.render_json(lines, now=now))
    else:
        for p in lines:
            print(f"{p.urgency:13} {p.path}: {p.packs} × {p.pack_size} {p.name} ({p.sku}) — {p.on_hand} on hand, par {p.par}")
        if not lines:
            print("nothing to bring")
    return 0


async def _simulate(args: argparse.Namespace) -> int:
    site = _load(args.config)
    broker = site.mqtt
    async with _stop_signal(args.duration) as stop:
        sim = _simulated_site(
            site, args.config, mqtt_host=broker.host if broker else None, mqtt_port=broker.port if broker else None
        )
        if sim is None:
            return 2
        await sim.start()
        control = None
        if args.control_port is not None:
            from simulators.control import ControlServer

            control = ControlServer(sim)
            port = await control.start(args.control_host, args.control_port)
            print(f"  fault control          http://{args.control_host}:{port}/devices  POST /faults", flush=True)
        for line in sim.describe():
            print(f"  {line}")
        print("simulators running; Ctrl-C stops them", flush=True)
        await stop.wait()
        if control is not None:
            await control.stop()
        await sim.stop()
    return 0


async def _demo(args: argparse.Namespace) -> int:
    from eqmon_app.service import Service
    from simulators.broker import EmbeddedBroker

    # The demo's alerts go to SQLite in its own (wiped) data directory, never to a database the
    # site file names: a demo must not write into production state.
    site = _load(args.config).model_copy(update={"database": Database()})
    data_dir = Path(args.data_dir)
    if data_dir.exists():
        shutil.rmtree(data_dir)  # every demo starts from nothing: no alerts left from last time
    async with _stop_signal(args.duration) as stop:
        broker = None
        mqtt = site.mqtt
        if mqtt is None and site.mqtt_devices():
            broker = EmbeddedBroker(host="127.0.0.1", port=0)
            await broker.start()
            mqtt = MqttBroker(host="127.0.0.1", port=broker.port, client_id="eqmon-demo")
        sim = _simulated_site(site, args.config, mqtt_host=mqtt.host if mqtt else None, mqtt_port=mqtt.port if mqtt else None)
        if sim is None:
            if broker is not None:
                await broker.stop()
            return 2
        service = None
        receiver: Any = None
        try:
            await sim.start()
            if site.notifications is None:  # the log line, and a local webhook receiver to look at
                from simulators.receivers import WebhookReceiver

                receiver = WebhookReceiver(log_file=data_dir / "webhook.jsonl").start()
                site = site.model_copy(update={"notifications": _demo_notifications(receiver.url)})
            service = Service(site, data_dir=data_dir, mqtt=mqtt, api_port=args.port, delay_scale=DEMO_DELAY_SCALE)
            from simulators.control import FaultControl

            service.state.simulators = FaultControl(sim)  # /api/v1/simulators: the tester's faults
            await service.start()
            logins = _demo_users(service)
            print(f"eqmon demo — {site.site.name} ({args.config})")
            if broker is not None:
                print(f"  embedded MQTT broker   mqtt://127.0.0.1:{broker.port}")
            print("  simulated devices:")
            for line in sim.describe():
                print(f"    {line}")
            print(f"  telemetry store        {data_dir / 'telemetry.sqlite'}")
            if receiver is not None:
                print(f"  notifications          log lines, and webhook {receiver.url} -> {data_dir / 'webhook.jsonl'}")
            print(f"  dashboard              {service.api_url}/")
            for name, role, password in logins:
                print(f"  login {role:<12}     user {name:<12} password {password}")
            print(
                f"  API                    {service.api_url}/api/v1/devices  {service.api_url}/api/v1/alerts"
            )
            print(f"  fault injection        {service.api_url}/api/v1/simulators  (coordinator or admin)")
            for step in site.scenario:
                print(f"  scenario: at {step.at:g} s, {step.fault} on {step.device} {step.param_values()}")
            if site.inventory is not None:
                print(f"  stock                  eqmon inventory status --config {args.config} --data-dir {data_dir}")
            print(f"  alert delays are shortened {DEMO_DELAY_SCALE:g}× for the demo (60 min → 30 s)")
            print("Ctrl-C stops everything.", flush=True)
            await stop.wait()
            print("stopping…", flush=True)
        finally:
            if service is not None:
                await service.stop()
            if receiver is not None:
                receiver.stop()
            await sim.stop()
            if broker is not None:
                await broker.stop()
    print("stopped cleanly", flush=True)
    return 0


DEMO_USERS = (
    ("coordinator", "coordinator"),
    ("supply", "supply"),
    ("viewer", "viewer"),
    ("admin", "admin"),
)


def _demo_users(service: Any) -> list[tuple[str, str, str]]:
    """One user per role for the demo, each with a new random password (printed): (name, role,
    password)."""
    from dashboard_api.auth import new_password

    out = []
    for name, role in DEMO_USERS:
        password = new_password()
        service.state.auth.add_user(name, role, password)
        out.append((name, role, password))
    return out


def _demo_notifications(webhook_url: str) -> Notifications:
    """The demo's notifications: every alert change as a log line and to a local webhook."""
    from eqmon.config import WebhookChannel

    return Notifications(
        channels=[LogChannel(id="log", type="log"), WebhookChannel(id="demo-webhook", type="webhook", url=webhook_url)],
        routes=[Route(severity=["critical", "warning", "info"], channels=["log", "demo-webhook"])],
        poll_interval=0.5,
    )


# -- eqmon inventory import|export (CSV) -------------------------------------------------------


def _inventory_db(config: str, data_dir: str, what: str) -> tuple[Site, Engine] | int:
    """The site and its state database at this eqmon's schema (never migrated or created here),
    or the exit code after one line on stderr: 2 for a bad site file or schema, 1 for a database
    missing or out of reach."""
    from eqmon import db
    from eqmon.db.engine import database_url

    site = _load(config, warnings=[])
    try:
        url = database_url(site.database, Path(data_dir))
    except ValueError as exc:  # password_env not set
        print(f"{what}: {config}: {exc}", file=sys.stderr)
        return 2
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
        print(f"{what}: no state database at {url.database} (check --data-dir; eqmon db upgrade --config {config} creates it)", file=sys.stderr)
        return 1
    engine = db.open_engine(site.database, Path(data_dir))
    try:
        rev = db.current(engine)
        if rev != db.HEAD:
            print(f"{what}: state database {db.redacted(engine)} is at revision {rev or 'none (empty)'}, not {db.HEAD}: run eqmon db upgrade", file=sys.stderr)
            engine.dispose()
            return 2
    except (db.SchemaTooNew, db.StateDatabaseError) as exc:
        print(f"{what}: {exc}", file=sys.stderr)
        engine.dispose()
        return 2 if isinstance(exc, db.SchemaTooNew) else 1
    return site, engine


def cmd_inventory_csv(args: argparse.Namespace) -> int:
    """``eqmon inventory import FILE --kind K``: check a CSV file of items, locations or bins
    against itself and the state database, print every problem (line, column) and apply
    nothing (exit 2), or apply all of it in one transaction. ``export --kind K [-o FILE]``: the
    same format, every column. docs/inventory.md."""
    from sqlalchemy.exc import SQLAlchemyError

    from eqmon.config import read_csv_file
    from inventory.csvio import CsvImportError, export_csv, import_csv

    what = f"eqmon inventory {args.inventory_command}"
    opened = _inventory_db(args.config, args.data_dir, what)
    if isinstance(opened, int):
        return opened
    site, engine = opened
    try:
        if args.inventory_command == "export":
            text = export_csv(engine, args.kind)
            if args.output is None:
                sys.stdout.write(text)
            else:
                Path(args.output).write_text(text, encoding="utf-8")
                print(f"{args.output}: {text.count(chr(10)) - 1} {args.kind}")
            return 0
        try:
            result = import_csv(engine, args.kind, read_csv_file(args.file), file=args.file, site=site, dry_run=args.dry_run)
        except CsvImportError as exc:
            for line in exc.lines():
                print(line, file=sys.stderr)
            n = len(exc.issues)
            print(f"{args.file}: {n} problem{'' if n == 1 else 's'}: nothing applied", file=sys.stderr)
            return 2
        except ValueError as exc:  # unreadable, not UTF-8
            print(f"{args.file}: {exc}", file=sys.stderr)
            return 2
        if result.site_changes is not None and result.site_changes.changed_anything:
            print(f"{args.config}: {result.site_changes.summary()} (the site file's, as at start-up)")
        for line in result.warnings:
            print(f"warning: {line}")
        print(result.summary())
        return 0
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        print(f"{what}: state database: {detail[0] if detail else exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def _inventory_csv_parsers(isub: Any) -> None:
    """``eqmon inventory import`` and ``export``, in the group of ``_inventory_parsers``."""
    from eqmon.config import INVENTORY_CSV_KINDS

    imp = isub.add_parser("import", help="check a CSV file of items, locations or bins; apply all of it or nothing")
    imp.add_argument("file")
    imp.add_argument("--dry-run", action="store_true", help="check against the database, apply nothing")
    exp = isub.add_parser("export", help="write items, locations or bins as CSV (the import's format)")
    exp.add_argument("-o", "--output", default=None, help="write to FILE (default: stdout)")
    for q in (imp, exp):
        q.add_argument("--kind", required=True, choices=INVENTORY_CSV_KINDS)
        q.add_argument("--config", required=True, help="site file (its `database:`, devices and inventory)")
        q.add_argument("--data-dir", default="data")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eqmon", description="Equipment and supply monitoring.")
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info",
        help="eqmon's log level; debug also opens the protocol libraries' own logs",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="same as --log-level debug")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-config", help="validate a site file; prints ok or every error, exit 2")
    p.add_argument("file")
    p.add_argument("--plan", action="store_true", help="also print each Modbus device's read plan")
    p.add_argument("--probe", action="store_true", help="with --plan: read each Modbus device once, print what it rejects")

    p = sub.add_parser("run", help="the production service: collectors, sinks, alerts, API")
    p.add_argument("--config", required=True)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--duration", type=float, default=None, help="stop after SECONDS")

    p = sub.add_parser("simulate", help="simulated devices of a site file, alone")
    p.add_argument("--config", required=True)
    p.add_argument(
        "--control-port", type=int, default=None,
        help="serve the fault-injection endpoint (GET /devices, POST /faults) on this port (0: any free one)",
    )
    p.add_argument("--control-host", default="127.0.0.1")
    p.add_argument("--duration", type=float, default=None, help="stop after SECONDS")

    p = sub.add_parser("demo", help="everything on embedded defaults, with simulated devices")
    p.add_argument("--config", default=str(EXAMPLE_SITE))
    p.add_argument("--data-dir", default="data/demo")
    p.add_argument("--port", type=int, default=None, help="API port (default: the site file's, 8080)")
    p.add_argument("--duration", type=float, default=None, help="stop after SECONDS")

    p = sub.add_parser("db", help="the state database (alerts, their history …): migrations")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    for name, what in (
        ("upgrade", "migrate the state database to this eqmon's schema (run does it at start-up)"),
        ("current", "print the state database's schema revision"),
    ):
        q = dbsub.add_parser(name, help=what)
        q.add_argument("--config", default=None, help="site file (its `database:`); default: SQLite in the data directory")
        q.add_argument("--data-dir", default="data")

    p = sub.add_parser("report", help="reports from the alert history (state database)")
    rsub = p.add_subparsers(dest="report", required=True)
    for name, what in (
        ("shift", "alerts raised, acknowledged, resolved, open at the end; time to acknowledge; by severity"),
        ("excursions", "each threshold/range alert per device: start, end, duration, value, acknowledgement"),
        ("alert-volume", "alerts per rule and device, per day, with the median duration: the noisy rules"),
    ):
        q = rsub.add_parser(name, help=what)
        q.add_argument("--since", default=None, help="ISO 8601, local to the site (e.g. 2026-03-02T07:00), or Unix seconds")
        q.add_argument("--until", default=None, help="ISO 8601, local to the site, or Unix seconds; default: now")
        fmt = q.add_mutually_exclusive_group()
        fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
        fmt.add_argument("--json", action="store_true", help="JSON")
        q.add_argument("--config", default=None, help="site file (its time zone and `database:`); default: UTC, SQLite in the data directory")
        q.add_argument("--data-dir", default="data")

    _inventory_csv_parsers(_inventory_parsers(sub))
    _user_parsers(sub)

    args = parser.parse_args(argv)
    if args.command == "check-config":
        return cmd_check_config(args)
    _setup_logging("debug" if args.verbose else args.log_level)
    if args.command == "db":
        return cmd_db(args)
    if args.command == "report":
        return cmd_report(args)
    if args.command == "user":
        return cmd_user(args)
    if args.command == "inventory":
        return cmd_inventory_csv(args) if args.inventory_command in ("import", "export") else cmd_inventory(args)
    runner = {"run": _run, "simulate": _simulate, "demo": _demo}[args.command]
    from eqmon.db import SchemaTooNew, StateDatabaseError

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as loop_runner:
            return loop_runner.run(runner(args))
    except SchemaTooNew as exc:  # one line naming the database and both revisions
        print(f"eqmon {args.command}: cannot start: {exc}", file=sys.stderr)
        return 2
    except StateDatabaseError as exc:
        print(f"eqmon {args.command}: cannot start: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a port in use, a data directory not writable …
        print(f"eqmon {args.command}: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
