"""In-process receivers of eqmon's notifications, for the integration tests: a webhook
receiver (http.server in a daemon thread) and an SMTP server (aiosmtpd's Controller, STARTTLS
and AUTH optional). Both listen on free 127.0.0.1 ports, can be stopped and started again on the
same port (a receiver "down" for a while), record what they received, and drop duplicates by
message id the way a real receiver should. Like the rest of simulators/, this imports nothing of
eqmon: the webhook receiver checks the HMAC-SHA256 signature on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .servers import LOCALHOST, free_port


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# -- webhook ----------------------------------------------------------------------------------


@dataclass
class WebhookRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None  # None: the receiver has no secret
    json: Any = None


@dataclass
class WebhookReceiver:
    """Records every POST; answers ``statuses`` in turn (then 200), after ``delay`` seconds."""

    secret: bytes | None = None
    port: int = 0
    delay: float = 0.0
    statuses: list[int] = field(default_factory=list)
    requests: list[WebhookRequest] = field(default_factory=list)
    log_file: Path | None = None  # each body appended as one JSON line (the demo's receiver)

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}/hook"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.delay:
                    time.sleep(receiver.delay)
                ok: bool | None = None
                if receiver.secret is not None:
                    want = "sha256=" + hmac.new(receiver.secret, body, hashlib.sha256).hexdigest()
                    ok = hmac.compare_digest(want, self.headers.get("X-Eqmon-Signature", ""))
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                with receiver._lock:
                    receiver.requests.append(WebhookRequest(self.path, dict(self.headers), body, ok, doc))
                    if receiver.log_file is not None:
                        with receiver.log_file.open("ab") as f:
                            f.write(body + b"\n")
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((LOCALHOST, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused until ``start()``)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def by_message_id(self) -> dict[str, list[WebhookRequest]]:
        with self._lock:
            out: dict[str, list[WebhookRequest]] = {}
            for r in self.requests:
                out.setdefault(r.headers.get("X-Eqmon-Message-Id", ""), []).append(r)
            return out

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` distinct message ids were received."""
        _wait(lambda: len(self.by_message_id()) >= count, timeout, f"{count} webhook messages")


# -- SMTP -------------------------------------------------------------------------------------


def self_signed_cert(directory: Path, host: str = LOCALHOST) -> tuple[Path, Path]:
    """(certificate, key) for ``host`` (an IP address), made by the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class SmtpMail:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    tls: bool
    login: str | None


class SmtpReceiver:
    """An SMTP server (aiosmtpd) on a free port. ``tls_files`` (certificate, key) enables
    STARTTLS (required then); ``users`` enables AUTH (PLAIN/LOGIN over TLS); ``refuse``:
    recipients answered ``550``."""

    def __init__(
        self,
        *,
        tls_files: tuple[Path, Path] | None = None,
        users: dict[str, str] | None = None,
        refuse: set[str] | None = None,
        port: int = 0,
    ) -> None:
        self.port = port or free_port()
        self.tls_files = tls_files
        self.users = users
        self.refuse = refuse or set()
        self.mails: list[SmtpMail] = []
        self._controller: Any = None

    def start(self) -> SmtpReceiver:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        receiver = self

        class Handler:
            async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
                if address in receiver.refuse:
                    return "550 5.1.1 no such mailbox"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                msg = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
                login = session.auth_data.login.decode() if session.authenticated and session.auth_data else None
                receiver.mails.append(
                    SmtpMail(envelope.mail_from, list(envelope.rcpt_tos), msg, session.ssl is not None, login)
                )
                return "250 Message accepted"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
            ok = (
                isinstance(auth_data, LoginPassword)
                and receiver.users is not None
                and receiver.users.get(auth_data.login.decode()) == auth_data.password.decode()
            )
            return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

        kwargs: dict[str, Any] = {}
        if self.tls_files is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self.tls_files[0]), str(self.tls_files[1]))
            kwargs.update(tls_context=ctx, require_starttls=True)
        if self.users is not None:
            kwargs.update(authenticator=authenticator, auth_require_tls=self.tls_files is not None)
        self._controller = Controller(Handler(), hostname=LOCALHOST, port=self.port, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        _wait(lambda: len(self.mails) >= count, timeout, f"{count} e-mails")
