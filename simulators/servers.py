"""Managers for real server processes used by the integration tests and the benchmarks.

Like the rest of :mod:`simulators`, this stands in for the hospital's infrastructure (an MQTT
broker, a time-series database, PostgreSQL) so eqmon can be tested against the real thing; it
imports nothing of eqmon itself.

Every manager runs its own copy of a server on a free 127.0.0.1 port inside its own
temporary directory, so tests may stop, SIGKILL and restart it freely. The machine's
own services (Mosquitto on 1883, PostgreSQL on 5432) are never touched.

Common API (see :class:`ServerProcess`)::

    srv = MosquittoServer()      # nothing runs yet; port is reserved and fixed
    srv.start()                  # blocks until ready, RuntimeError (with log tail) otherwise
    srv.url, srv.host, srv.port, srv.tmpdir, srv.log_path, srv.pid
    srv.stop()                   # graceful (SIGTERM, SIGKILL after a timeout)
    srv.kill()                   # SIGKILL the whole process group, no clean shutdown
    srv.restart()                # stop()+start(), same port, same data directory
    srv.restart(kill=True)       # kill()+start()
    srv.close()                  # stop and delete the temporary directory
    with MosquittoServer() as srv: ...   # start() ... close()

Servers run in their own session/process group (``start_new_session=True``) so that a
SIGKILL also takes down helper processes (PostgreSQL backends) and so that Ctrl-C of
pytest does not race our own shutdown.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache"
LOCALHOST = "127.0.0.1"

MOSQUITTO_BIN = os.environ.get("EQMON_MOSQUITTO_BIN", "/usr/sbin/mosquitto")
MACHINE_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"

# Managers whose process is currently running (used by the leak checker in conftest).
_RUNNING: set[ServerProcess] = set()


_handed_out: collections.deque[int] = collections.deque(maxlen=4096)
_handed_out_set: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on *host* that is free right now (the OS picks it), and not one this
    process handed out recently: the kernel may give the same ephemeral port to two binds in a
    row once the first socket is closed, and two devices of one test site on one port is a
    different site (seen once in five suite runs)."""
    with _handed_out_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port: int = s.getsockname()[1]
            if port not in _handed_out_set:
                break
        if len(_handed_out) == _handed_out.maxlen:
            _handed_out_set.discard(_handed_out[0])
        _handed_out.append(port)
        _handed_out_set.add(port)
        return port


def tcp_connectable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET *url*; return (status, body). HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty log>"


def running_servers() -> list[ServerProcess]:
    """All servers currently running under a manager of this process."""
    return [srv for srv in list(_RUNNING) if srv.running]


class ServerProcess:
    """Base class: one server process in its own temp dir, on a fixed free port."""

    name = "server"
    ready_timeout = 30.0
    stop_timeout = 15.0
    #: signal used by stop() for a graceful shutdown
    stop_signal = signal.SIGTERM
    #: run the server as this OS user when we are root (None: as ourselves)
    run_as: str | None = None

    def __init__(self, *, port: int | None = None, tmpdir: str | Path | None = None,
                 shared: bool = False):
        #: shared=True: meant to outlive single tests (session/module fixtures); the leak
        #: check in conftest ignores it. A non-shared server still running after the test
        #: that started it is reported as a leak.
        self.shared = shared
        self.host = LOCALHOST
        self.port = port or free_port()
        self._own_tmpdir = tmpdir is None
        self.tmpdir = Path(tmpdir) if tmpdir else Path(tempfile.mkdtemp(prefix=f"eqmon-{self.name}-"))
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.tmpdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self.start_count = 0
        #: seconds the last start() took until ready
        self.last_startup_seconds: float | None = None

    # -- to implement -------------------------------------------------------------------------
    def _prepare(self) -> None:
        """One-time setup before the first start (config files, initdb, ...)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        return tcp_connectable(self.host, self.port)

    @property
    def url(self) -> str:
        raise NotImplementedError

    # -- process control ----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _popen_user_kwargs(self) -> dict:
        if self.run_as and os.geteuid() == 0:
            pw = pwd.getpwnam(self.run_as)
            return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        return {}

    def start(self) -> ServerProcess:
        if self.running:
            return self
        if not self._prepared:
            self._prepare()
            self._prepared = True
        cmd = self._command()
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start #{self.start_count + 1}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmpdir,
                start_new_session=True,
                **self._popen_user_kwargs(),
            )
        _RUNNING.add(self)
        self.start_count += 1
        deadline = t0 + self.ready_timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self._forget()
                raise RuntimeError(
                    f"{self.name} exited with code {code} while starting on port {self.port}.\n"
                    f"command: {' '.join(cmd)}\nlog {self.log_path} (tail):\n{_tail(self.log_path)}"
                )
            if self._is_ready():
                self.last_startup_seconds = time.monotonic() - t0
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"{self.name} did not become ready on port {self.port} within "
                    f"{self.ready_timeout:.0f}s.\ncommand: {' '.join(cmd)}\n"
                    f"log {self.log_path} (tail):\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def _forget(self) -> None:
        """Process has exited: reap stragglers of its process group and unregister."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        _RUNNING.discard(self)
        self._wait_port_closed()

    def _wait_port_closed(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while tcp_connectable(self.host, self.port, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, timeout: float | None = None) -> None:
        """Graceful shutdown (``stop_signal``); SIGKILL if it has not exited in *timeout*."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout=self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._forget()

    def kill(self) -> None:
        """SIGKILL the server and its process group: no clean shutdown, nothing flushed."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._forget()

    def restart(self, *, kill: bool = False) -> ServerProcess:
        """Stop (or SIGKILL with ``kill=True``) and start again: same port, same data dir."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and remove the temporary directory (if we created it)."""
        try:
            self.stop()
        finally:
            if self._own_tmpdir:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.url} {state} dir={self.tmpdir}>"


# ---------------------------------------------------------------------------------------------
# Mosquitto
# ---------------------------------------------------------------------------------------------
class MosquittoServer(ServerProcess):
    """A private Mosquitto broker (anonymous, persistence on) on a free loopback port.

    Persistence semantics (mosquitto 2.0):

    * The in-memory state (persistent sessions = clients connected with
      ``clean_session=False`` / MQTT5 ``clean_start=False`` + session expiry, their
      subscriptions, queued QoS1/2 messages and retained messages) is written to
      ``<tmpdir>/mosquitto.db`` on a clean shutdown (SIGTERM -> :meth:`stop`) and every
      ``autosave_interval`` seconds (here 1 s).
    * :meth:`kill` (SIGKILL) loses everything that changed since the last autosave, i.e. up
      to ~1 s of queued messages. Tests that need a message to survive a SIGKILL must wait
      > ``autosave_interval`` seconds after publishing.
    """

    name = "mosquitto"
    ready_timeout = 15.0
    autosave_interval = 1

    def __init__(self, *, port: int | None = None, tmpdir: str | Path | None = None,
                 shared: bool = False, extra_config: Iterable[str] = (),
                 users: dict[str, str] | None = None):
        """``users`` (name → password): clients must log in; no anonymous access."""
        super().__init__(port=port, tmpdir=tmpdir, shared=shared)
        self.conf_path = self.tmpdir / "mosquitto.conf"
        self.extra_config = list(extra_config)
        self.users = dict(users or {})

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _prepare(self) -> None:
        if not os.access(MOSQUITTO_BIN, os.X_OK):
            raise RuntimeError(
                f"mosquitto binary {MOSQUITTO_BIN} not found; run scripts/bootstrap "
                "(apt-get install mosquitto)"
            )
        auth = ["allow_anonymous true"]
        if self.users:
            pwfile = self.tmpdir / "passwords"
            pwfile.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(pwfile)], check=True, capture_output=True)
            auth = ["allow_anonymous false", f"password_file {pwfile}"]
        lines = [
            f"listener {self.port} {self.host}",
            *auth,
            "persistence true",
            f"persistence_location {self.tmpdir}/",
            "persistence_file mosquitto.db",
            # Save the in-memory DB every second (besides the save at clean shutdown), so
            # that even a SIGKILL loses at most ~1 s of state.
            f"autosave_interval {self.autosave_interval}",
            "autosave_on_changes false",
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # As root mosquitto drops privileges to `user` (default "mosquitto"): keep root
            # so it can write the persistence DB in our root-owned temp dir.
            lines.append("user root")
        lines.extend(self.extra_config)
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _command(self) -> list[str]:
        return [MOSQUITTO_BIN, "-c", str(self.conf_path)]


# ---------------------------------------------------------------------------------------------
# VictoriaMetrics
# ---------------------------------------------------------------------------------------------
VM_CACHE_DIR = CACHE_DIR / "victoria-metrics"
VM_DEBIAN_SUITE = "trixie"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APT_SOURCES_LIST = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")


@dataclass(frozen=True)
class AptSource:
    """One ``deb`` entry of an apt configuration (one URI, its suites and components)."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    origin: str = ""  # the file it came from, for error messages


def _is_security_suite(suite: str) -> bool:
    # bookworm-security, trixie-security; before bullseye: buster/updates
    return suite.endswith("-security") or suite.endswith("/updates")


def parse_deb822_sources(text: str, origin: str = "") -> list[AptSource]:
    """``deb`` entries of a deb822 ``.sources`` file (``Types:``, ``URIs:``, ``Suites:``,
    ``Components:``, ``Enabled:``); one entry per URI of a stanza."""
    out: list[AptSource] = []
    stanzas: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    key: str | None = None
    for raw in text.splitlines() + [""]:
        if raw.startswith("#"):
            continue  # a comment, also between the fields of a stanza
        if not raw.strip():
            if fields:
                stanzas.append(fields)
            fields, key = {}, None
            continue
        if raw[0] in " \t":  # continuation of the previous field (e.g. an inline key)
            if key is not None:
                fields[key] += "\n" + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        fields[key] = value.strip()
    for f in stanzas:
        if "deb" not in f.get("types", "").split():
            continue
        if f.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        for uri in f.get("uris", "").split():
            out.append(AptSource(uri.rstrip("/"), tuple(f.get("suites", "").split()),
                                 tuple(f.get("components", "").split()), origin))
    return out


def parse_one_line_sources(text: str, origin: str = "") -> list[AptSource]:
    """``deb`` entries of a one-line-style ``sources.list``:
    ``deb [option=value …] URI suite [component …]``."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb ") and not line.startswith("deb\t"):
            continue
        rest = line[3:].strip()
        if rest.startswith("["):  # options: [arch=amd64 signed-by=…]
            rest = rest.partition("]")[2]
        words = rest.split()
        if len(words) < 2:
            continue
        out.append(AptSource(words[0].rstrip("/"), (words[1],), tuple(words[2:]), origin))
    return out


def apt_sources(sources_list: Path = APT_SOURCES_LIST, sources_dir: Path = APT_SOURCES_DIR) -> list[AptSource]:
    """The ``deb`` entries of the machine's apt configuration, in apt's reading order."""
    found: list[AptSource] = []
    if sources_list.is_file():
        found += parse_one_line_sources(sources_list.read_text(errors="replace"), str(sources_list))
    if sources_dir.is_dir():
        for path in sorted(sources_dir.iterdir()):
            if path.suffix == ".list":
                found += parse_one_line_sources(path.read_text(errors="replace"), str(path))
            elif path.suffix == ".sources":
                found += parse_deb822_sources(path.read_text(errors="replace"), str(path))
    return found


def pick_debian_archive(sources: Iterable[AptSource]) -> AptSource | None:
    """The entry that serves Debian's main archive: a ``deb`` entry with component ``main``
    whose suites are not the security archive. Preferred, in this order: a URI with a path
    segment ``debian`` (how Debian mirrors and snapshots lay out the archive; third-party
    repositories rarely do), and suites that list a release itself (``bookworm``, not only
    ``bookworm-updates``/``-backports``); then apt's reading order. None if there is none."""
    candidates = [
        s for s in sources
        if s.suites and "main" in s.components and not s.uri.startswith("cdrom:")
        and not any(_is_security_suite(x) for x in s.suites)
    ]  # fmt: skip

    def rank(s: AptSource) -> tuple[bool, bool]:
        debian_path = "debian" in urllib.parse.urlsplit(s.uri).path.split("/")
        release = any("-" not in x and "/" not in x for x in s.suites)
        return (not debian_path, not release)

    return min(candidates, key=rank) if candidates else None  # min: the first of the best


def debian_archive_source(sources_list: Path = APT_SOURCES_LIST, sources_dir: Path = APT_SOURCES_DIR) -> AptSource:
    """The machine's own Debian mirror (:func:`pick_debian_archive` of its apt configuration);
    RuntimeError naming the files read when it has none."""
    source = pick_debian_archive(apt_sources(sources_list, sources_dir))
    if source is None:
        raise RuntimeError(
            f"cannot fetch victoria-metrics: no Debian archive entry (deb, component main, not the "
            f"security suite) in {sources_list} or {sources_dir}/*.sources|*.list; "
            "set EQMON_VICTORIA_METRICS_BIN to a victoria-metrics binary"
        )
    return source


def private_apt_sources(source: AptSource, suite: str = VM_DEBIAN_SUITE) -> str:
    """The deb822 sources of the private apt configuration: the machine's Debian mirror
    (``source``), with only the suite changed; checked against Debian's archive keyring."""
    return (
        "Types: deb\n"
        f"URIs: {source.uri}\n"
        f"Suites: {suite}\n"
        "Components: main\n"
        f"Signed-By: {DEBIAN_KEYRING}\n"
    )


def ensure_victoria_metrics(cache_dir: Path = VM_CACHE_DIR) -> Path:
    """Return the path of a ``victoria-metrics`` binary, downloading it if needed.

    Order: ``$EQMON_VICTORIA_METRICS_BIN``; ``<repo>/.cache/victoria-metrics/victoria-metrics``;
    otherwise the Debian trixie package ``victoria-metrics`` is downloaded with a private
    apt configuration (the system's sources, lists and caches are not touched; the mirror is
    the one the machine's own apt configuration uses for the Debian archive, with the suite
    changed to trixie) and its ``usr/bin/victoria-metrics`` is kept in the cache. A file lock serialises parallel
    callers (pytest-xdist workers, bootstrap running twice).
    """
    env = os.environ.get("EQMON_VICTORIA_METRICS_BIN")
    if env:
        return Path(env)
    binary = cache_dir / "victoria-metrics"
    if os.access(binary, os.X_OK):
        return binary
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.access(binary, os.X_OK):  # somebody else finished while we waited
            return binary
        _download_victoria_metrics(cache_dir, binary)
    return binary


def _run(cmd: list[str], cwd: Path) -> None:
    res = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout[-3000:]}")


def _download_victoria_metrics(cache_dir: Path, binary: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise RuntimeError("cannot fetch victoria-metrics: apt-get/dpkg not available; "
                           "set EQMON_VICTORIA_METRICS_BIN to a victoria-metrics binary")
    apt = cache_dir / "apt"
    shutil.rmtree(apt, ignore_errors=True)
    for sub in ("etc", "lists/partial", "cache/archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "etc" / "debian.sources").write_text(private_apt_sources(debian_archive_source()))
    opts = [
        "-o", "Dir::Etc::SourceList=/dev/null",
        "-o", f"Dir::Etc::SourceParts={apt / 'etc'}",
        "-o", f"Dir::State::Lists={apt / 'lists'}",
        "-o", f"Dir::Cache={apt / 'cache'}",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
    ]
    _run(["apt-get", *opts, "update"], cwd=apt)
    _run(["apt-get", *opts, "download", "victoria-metrics"], cwd=apt)
    debs = sorted(apt.glob("victoria-metrics_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download produced no victoria-metrics .deb in {apt}")
    extract = apt / "x"
    _run(["dpkg", "-x", str(debs[-1]), str(extract)], cwd=apt)
    src = extract / "usr" / "bin" / "victoria-metrics"
    if not src.exists():
        raise RuntimeError(f"{debs[-1].name} has no usr/bin/victoria-metrics")
    tmp = binary.with_suffix(".tmp")
    shutil.copy2(src, tmp)
    tmp.chmod(0o755)
    os.replace(tmp, binary)  # atomic: readers never see a half-written binary
    (cache_dir / "VERSION").write_text(debs[-1].name + "\n")
    shutil.rmtree(apt, ignore_errors=True)


class VictoriaMetricsServer(ServerProcess):
    """A private VictoriaMetrics single node: stand-in for the InfluxDB v2 write API.

    Write with influx line protocol to ``{url}/api/v2/write?org=..&bucket=..`` (or
    influxdb-client pointed at :attr:`url` with any token/org/bucket); read back with
    :meth:`export`.

    How VictoriaMetrics maps line protocol to series:

    * ``measurement,tag=v field=1.5 <ts>`` becomes the series
      ``measurement_field{tag="v"}`` (measurement and field joined by ``_``); every field
      of a line is a separate series. Tags become labels.
    * The ``db`` query arg of /write becomes a ``db`` label; ``org``/``bucket`` of
      /api/v2/write do NOT become labels (checked with v1.112 in tests/test_servers.py).
    * Only numbers are stored: booleans become 0/1 and a string field becomes a series
      with value 0 (observed with v1.112) -- do not write strings you want to read back.
    * Timestamps are stored with millisecond precision.

    ``dedup=True`` starts it with ``-dedup.minScrapeInterval=1ms``: several samples of
    one series with the same millisecond timestamp collapse into one (the last written
    value wins) -- the InfluxDB "same series+timestamp overwrites" behaviour.

    Freshly written samples sit in an in-memory buffer for up to ~1 s before they are
    searchable; :meth:`flush` forces them out (``/internal/force_flush``). A clean
    :meth:`stop` persists everything; :meth:`kill` (SIGKILL) lost series written 0-3 s
    before the kill even after :meth:`flush` (force_flush only makes data searchable, the
    on-disk flush runs every few seconds); data written >= ~12 s earlier survived.
    """

    name = "victoria-metrics"
    ready_timeout = 30.0

    def __init__(self, *, dedup: bool = False, port: int | None = None,
                 tmpdir: str | Path | None = None, shared: bool = False,
                 extra_args: Iterable[str] = ()):
        super().__init__(port=port, tmpdir=tmpdir, shared=shared)
        self.dedup = dedup
        self.data_dir = self.tmpdir / "data"
        self.extra_args = list(extra_args)
        self.binary: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def write_url(self) -> str:
        return f"{self.url}/api/v2/write"

    def _prepare(self) -> None:
        self.binary = ensure_victoria_metrics()

    def _command(self) -> list[str]:
        cmd = [
            str(self.binary),
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ]
        if self.dedup:
            cmd.append("-dedup.minScrapeInterval=1ms")
        return cmd + self.extra_args

    def _is_ready(self) -> bool:
        try:
            status, body = http_get(f"{self.url}/health", timeout=1)
        except OSError:
            return False
        return status == 200 and body.strip() == b"OK"

    def flush(self) -> None:
        """Make all accepted samples visible to search/export now."""
        status, body = http_get(f"{self.url}/internal/force_flush", timeout=10)
        if status != 200:
            raise RuntimeError(f"force_flush failed: HTTP {status} {body[:200]!r}")

    def export(self, match: str = '{__name__!=""}', *, flush: bool = True) -> list[dict]:
        """All series matching *match* as dicts ``{"metric": {...}, "values": [...],
        "timestamps": [ms, ...]}`` (from /api/v1/export, JSON lines)."""
        if flush:
            self.flush()
        # An explicit range: the default end of /api/v1/export leaves out the current second.
        query = urllib.parse.urlencode({"match[]": match, "start": "0",
                                        "end": str(int(time.time()) + 86400)})
        status, body = http_get(f"{self.url}/api/v1/export?{query}", timeout=30)
        if status != 200:
            raise RuntimeError(f"export failed: HTTP {status} {body[:500]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def write_lines(self, lines: str | Iterable[str], *, precision: str = "ns",
                    org: str = "eqmon", bucket: str = "eqmon") -> None:
        """POST raw line protocol to /api/v2/write (raises on non-2xx)."""
        data = lines if isinstance(lines, str) else "\n".join(lines)
        query = urllib.parse.urlencode({"org": org, "bucket": bucket, "precision": precision})
        req = urllib.request.Request(f"{self.write_url}?{query}", data=data.encode(),
                                     method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            if resp.status // 100 != 2:
                raise RuntimeError(f"write failed: HTTP {resp.status}")


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------
def machine_postgres_dsn() -> str:
    """DSN of the machine's PostgreSQL service (trust auth, database ``test``).

    Overridable with ``$EQMON_TEST_POSTGRES_DSN``. Never stop or restart that server.
    """
    return os.environ.get("EQMON_TEST_POSTGRES_DSN", MACHINE_POSTGRES_DSN)


def find_pg_bindir() -> Path:
    """Directory containing initdb and postgres (``$EQMON_PG_BINDIR``, PATH, Debian layout)."""
    env = os.environ.get("EQMON_PG_BINDIR")
    candidates: list[Path] = [Path(env)] if env else []
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                    key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                    reverse=True)
    candidates += [Path(p) for p in debian]
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(os.path.realpath(which)).parent)
    candidates.append(Path("/usr/local/bin"))
    for d in candidates:
        if (d / "initdb").exists() and (d / "postgres").exists():
            return d
    raise RuntimeError("PostgreSQL server binaries (initdb, postgres) not found; run "
                       "scripts/bootstrap (apt-get install postgresql) or set EQMON_PG_BINDIR")


class PostgresServer(ServerProcess):
    """A private PostgreSQL cluster (``initdb`` into the temp dir), trust auth.

    As root the cluster is created and run as the ``postgres`` OS user (the temp dir is
    chowned to it). :attr:`dsn` connects as superuser ``postgres`` to database ``test``
    (created at first start). :meth:`stop` uses SIGINT = PostgreSQL "fast" shutdown
    (SIGTERM would be "smart" shutdown, which waits for all clients to disconnect).
    """

    name = "postgres"
    ready_timeout = 60.0
    stop_signal = signal.SIGINT
    dbname = "test"
    user = "postgres"

    def __init__(self, *, port: int | None = None, tmpdir: str | Path | None = None,
                 shared: bool = False):
        super().__init__(port=port, tmpdir=tmpdir, shared=shared)
        self.run_as = "postgres" if os.geteuid() == 0 else None
        self.data_dir = self.tmpdir / "data"
        self.socket_dir = self.tmpdir / "sock"
        self.bindir: Path | None = None
        self._db_created = False

    @property
    def url(self) -> str:
        return self.dsn

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def _prepare(self) -> None:
        self.bindir = find_pg_bindir()
        self.socket_dir.mkdir(exist_ok=True)
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            for p in (self.tmpdir, self.socket_dir, self.log_path):
                if not p.exists():
                    p.touch()
                os.chown(p, pw.pw_uid, pw.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            res = subprocess.run(
                [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                 "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                cwd=self.tmpdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, timeout=120, **self._popen_user_kwargs(),
            )
            if res.returncode != 0:
                raise RuntimeError(f"initdb failed ({res.returncode}):\n{res.stdout[-3000:]}")

    def _bin(self, name: str) -> Path:
        if self.bindir is None:
            raise RuntimeError("PostgreSQL's programs were not found (start() looks for them)")
        return self.bindir / name

    def _command(self) -> list[str]:
        return [
            str(self._bin("postgres")),
            "-D", str(self.data_dir),
            "-h", self.host,
            "-p", str(self.port),
            "-k", str(self.socket_dir),
            # Speed without weakening crash safety against a *process* crash (kill()):
            # fsync/full_page_writes only protect against OS crashes. synchronous_commit
            # stays on, so a committed transaction survives SIGKILL.
            "-c", "fsync=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=200",
            "-c", "shared_buffers=32MB",
        ]

    def _is_ready(self) -> bool:
        if not tcp_connectable(self.host, self.port):
            return False
        # TCP accepts before recovery finishes: ask pg_isready-equivalent via a real login.
        res = subprocess.run(
            [str(self._bin("pg_isready")), "-q", "-h", self.host, "-p", str(self.port),
             "-U", self.user, "-d", "postgres"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=10,
        ) if self._bin("pg_isready").exists() else None
        return res is None or res.returncode == 0

    def start(self) -> PostgresServer:
        super().start()
        if not self._db_created:
            self._create_database()
        return self

    def _create_database(self) -> None:
        import psycopg  # imported lazily: importing this module needs no database driver

        with psycopg.connect(host=self.host, port=self.port, user=self.user, dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (self.dbname,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.dbname}"')
        self._db_created = True
