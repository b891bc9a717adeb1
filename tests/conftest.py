"""Shared pytest fixtures: real servers (started lazily, one per session) and a leak check.

Server fixtures (session scope, started only when a test requests them, always torn down):

* ``mosquitto`` -> :class:`simulators.servers.MosquittoServer` (one per session; each test
  gets it with no retained messages left by earlier tests)
* ``victoria``  -> :class:`simulators.servers.VictoriaMetricsServer` (``dedup=True``)
* ``postgres``  -> :class:`simulators.servers.PostgresServer` (own cluster, restartable)
* ``machine_postgres_dsn`` -> DSN of the machine's PostgreSQL (never restart it)
* ``state_db`` -> a fresh, empty state-database URL, parametrized: ``sqlite`` (a file in the
  test's directory) and ``postgresql`` (a database created on ``postgres`` for the test)

A test that stops/kills a session server must leave it running again (``restart()``), or
better: create its own ``with MosquittoServer() as srv:`` instance. If a server cannot be
started the fixture raises (the test errors); these fixtures never skip.

Import servers as ``from simulators.servers import ...`` and helpers as
``from simulators.harness import ...`` (the benchmarks use them too). The leak check reads the
registry of running servers of ``simulators.servers``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

# `pytest` (unlike `python -m pytest`) does not put the repo root on sys.path.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from simulators import servers  # noqa: E402
from simulators.harness import clear_retained  # noqa: E402

LEAK_GRACE_SECONDS = float(os.environ.get("EQMON_LEAK_GRACE_SECONDS", "2.0"))


def _start(server: servers.ServerProcess):
    try:
        server.start()
    except Exception as exc:
        server.close()
        raise RuntimeError(f"could not start test {server.name} server: {exc}") from exc
    return server


@pytest.fixture(scope="session")
def _mosquitto_session():
    server = _start(servers.MosquittoServer(shared=True))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def mosquitto(_mosquitto_session):
    """The session's broker, without the retained messages of earlier tests (the simulated
    devices publish their state retained; a test's subscribers must not get another test's)."""
    if not _mosquitto_session.running:  # a test stopped it without starting it again
        _mosquitto_session.start()
    clear_retained(_mosquitto_session.port)
    return _mosquitto_session


@pytest.fixture(scope="session")
def victoria():
    server = _start(servers.VictoriaMetricsServer(dedup=True, shared=True))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres():
    server = _start(servers.PostgresServer(shared=True))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_db(request, tmp_path):
    """A state-database URL, empty: a SQLite file in the test's directory, or a fresh database
    (unique name, dropped afterwards) on the session's PostgreSQL server. A PostgreSQL server
    that cannot start fails the test; it never skips."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.sqlite'}"
        return
    import uuid

    import psycopg

    server = request.getfixturevalue("postgres")
    name = f"eqmon_{uuid.uuid4().hex[:16]}"
    admin = dict(host=server.host, port=server.port, user=server.user, dbname="postgres",
                 autocommit=True, connect_timeout=10)
    with psycopg.connect(**admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{server.user}@{server.host}:{server.port}/{name}"
    finally:
        with psycopg.connect(**admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(state_db):
    """The state database of ``state_db``, migrated to the newest schema (SQLAlchemy engine)."""
    from eqmon import db
    from eqmon.db.engine import create

    e = create(state_db)
    try:
        db.upgrade(e)
        yield e
    finally:
        e.dispose()


@pytest.fixture(scope="session")
def machine_postgres_dsn() -> str:
    return servers.machine_postgres_dsn()


# ---------------------------------------------------------------------------------------------
# Leak check: threads and child processes a test leaves behind
# ---------------------------------------------------------------------------------------------
def _server_pids(srvs) -> set[int]:
    """PIDs of the given managed servers, including their children (postgres backends)."""
    pids = set()
    for srv in srvs:
        pid = srv.pid
        if pid is None:
            continue
        pids.add(pid)
        try:
            pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        except psutil.Error:
            pass
    return pids


def _live_children(me: psutil.Process) -> dict[int, psutil.Process]:
    out = {}
    try:
        children = me.children(recursive=True)
    except psutil.Error:
        return out
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        out[child.pid] = child
    return out


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline()) or proc.name()}"
    except psutil.Error:
        return f"pid {proc.pid}"


@pytest.fixture(autouse=True)
def _no_leaked_threads_or_processes(request):
    """Fail a test that leaves non-daemon threads or child processes running.

    Ignored: threads/processes that existed before the test, ``shared=True`` servers
    (the session fixtures, even when started or restarted during this test) and servers
    that were already running before the test. A non-shared server the test started and
    did not stop is a leak (and gets closed). Leaks get ``LEAK_GRACE_SECONDS`` to go away;
    leaked processes are then killed so the next test starts clean.
    Opt out with ``@pytest.mark.allow_leaks`` (not recommended).
    """
    me = psutil.Process()
    threads_before = set(threading.enumerate())
    children_before = {p.pid: p for p in _live_children(me).values()}
    servers_before = set(servers.running_servers())
    yield
    if request.node.get_closest_marker("allow_leaks"):
        return

    def leaks():
        threads = [t for t in threading.enumerate()
                   if t not in threads_before and t.is_alive() and not t.daemon]
        running = servers.running_servers()
        leaked_servers = [s for s in running if not s.shared and s not in servers_before]
        ignore = _server_pids(s for s in running if s not in leaked_servers)
        leaked_pids = _server_pids(leaked_servers)
        procs = []
        for pid, proc in _live_children(me).items():
            if pid in ignore or pid in leaked_pids:
                continue
            old = children_before.get(pid)
            if old is not None:
                try:
                    if old.create_time() == proc.create_time():
                        continue
                except psutil.Error:
                    continue
            procs.append(proc)
        return threads, procs, leaked_servers

    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    threads, procs, leaked_servers = leaks()
    while (threads or procs or leaked_servers) and time.monotonic() < deadline:
        time.sleep(0.05)
        threads, procs, leaked_servers = leaks()
    if not (threads or procs or leaked_servers):
        return
    lines = [f"thread {t.name!r} (ident {t.ident}, target {getattr(t, '_target', None)!r})"
             for t in threads]
    lines += [f"server {srv!r} (use `with ...:` or close())" for srv in leaked_servers]
    lines += [_describe(p) for p in procs]
    for srv in leaked_servers:
        srv.close()
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)
    pytest.fail(
        f"test left {len(threads)} non-daemon thread(s), {len(leaked_servers)} server(s) and "
        f"{len(procs)} other child process(es) running after {LEAK_GRACE_SECONDS}s "
        "(servers/processes were stopped):\n  " + "\n  ".join(lines),
        pytrace=False,
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "allow_leaks: do not fail the test for leftover threads/child processes"
    )
