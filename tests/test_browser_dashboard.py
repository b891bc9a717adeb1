"""The web dashboard in a real browser: Debian's Chromium (/usr/bin/chromium, headless) driven
by Playwright's Python package (never a downloaded browser), against `eqmon demo` in its own
process, as a ward would run it.

One demo for the whole module (its fridge excursion takes ~55 s to raise an alert: each test
paying for it would cost minutes). The demo runs the example site moved onto free ports (so it
never meets tests/test_demo.py's fixed simulator ports 15021–15024) with the example's
scenario minus the gloves' restock at 50 s, so the bin stays below its reorder point for the
supply test whatever the order and pace of the tests. Screenshots go to artifacts/screenshots/
(git-ignored). Every wait is bounded (Playwright's expect timeouts); nothing sleeps."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from simulators.servers import free_port
from tests.sitefiles import example_dict, example_on_free_ports
from tests.test_demo import Output, start_demo

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"width": 1366, "height": 768}
TABLET = {"width": 768, "height": 1024}
# The fridge drifts from 20 s, is above 8 °C at ~23 s and alerts 30 s later (delays shortened
# 120×): ~55 s after the demo starts. Bounded well above that for a slow CI machine.
EXCURSION_S = 120
UI_S = 10  # anything else the page shows after a click or a load


@dataclass
class Demo:
    base: str
    output: Output
    proc: subprocess.Popen[str]

    def credentials(self, role: str, timeout: float = 30) -> tuple[str, str]:
        """The demo's user name and password for ``role``, as it printed them."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.output.lines):
                words = line.split()
                if words[:2] == ["login", role]:
                    return words[words.index("user") + 1], words[words.index("password") + 1]
            assert self.proc.poll() is None, f"the demo exited: {''.join(self.output.lines)}"
            assert time.monotonic() < deadline, f"no login printed for {role}: {self.output.lines}"
            time.sleep(0.1)

    def token(self, role: str) -> str:
        return self.output.login(self.base, role)

    def api(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.base}{path}", data=data, method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)


def _start(tmp: Path) -> Demo:
    """`eqmon demo` on the example site moved onto free ports, once its API serves (it has
    printed the logins). A port taken meanwhile by another process: started again on others."""
    for attempt in range(3):
        site = example_on_free_ports(interval="2s")
        site["scenario"] = [s for s in example_dict()["scenario"] if s["fault"] != "restock"]
        site_file = tmp / f"site-{attempt}.yaml"
        site_file.write_text(yaml.safe_dump(site, sort_keys=False, allow_unicode=True))
        port = free_port()
        # --duration: the demo ends by itself should this process die without tearing down
        proc = start_demo(tmp, port, "--config", str(site_file), "--duration", "900")
        d = Demo(f"http://127.0.0.1:{port}", Output(proc), proc)
        deadline = time.monotonic() + 60
        while proc.poll() is None and not any(ln.startswith("  login admin") for ln in list(d.output.lines)):
            assert time.monotonic() < deadline, f"the demo did not start: {d.output.lines}"
            time.sleep(0.1)
        if proc.poll() is None:
            return d
        out = d.output.text()
        assert "Address already in use" in out, out
    raise AssertionError(f"the demo found no free port in 3 attempts: {out}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    d = _start(tmp_path_factory.mktemp("browser-demo"))
    try:
        yield d
    finally:
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGINT)
            try:
                d.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()
    out = d.output.text()
    assert "Traceback" not in out, out


@pytest.fixture(scope="module")
def browser(demo: Demo) -> Iterator[Browser]:
    assert os.access(CHROMIUM, os.X_OK), (
        f"{CHROMIUM} is missing: install Debian's chromium package (scripts/bootstrap does)"
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            # Chromium starts its network and storage services with the first page that needs
            # them, and keeps them: started here, not inside a test (its leak check would
            # count them).
            ctx = b.new_context()
            ctx.new_page().goto(f"{demo.base}/")
            ctx.close()
            yield b
        finally:
            b.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Any]:
    """Pages in their own browser contexts (own sessionStorage: one login each), closed after
    the test; a JavaScript error on any of them fails the test."""
    contexts = []
    errors: list[str] = []

    def make(viewport: dict[str, int] = DESKTOP) -> Page:
        ctx = browser.new_context(viewport=viewport)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(UI_S * 1000)  # clicks, fills …: bounded like the expects
        page.on("pageerror", lambda e: errors.append(str(e)))
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert not errors, errors


def log_in(page: Page, demo: Demo, role: str) -> None:
    """Log in with the form, by keyboard: the user name field has the focus on load."""
    user, password = demo.credentials(role)
    page.goto(f"{demo.base}/")
    expect(page.get_by_label("User name")).to_be_focused(timeout=UI_S * 1000)
    page.keyboard.type(user)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    expect(page.locator("#who")).to_contain_text(f"{user} ({role})", timeout=UI_S * 1000)


def shot(page: Page, name: str) -> None:
    # written here, not by Playwright (screenshot(path=…) writes from a worker thread of its
    # event loop, which outlives the test: the leak check would count it)
    (SHOTS / f"{name}.png").write_bytes(page.screenshot(full_page=True))


def no_horizontal_overflow(page: Page) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width[0] <= width[1], f"{page.url}: the page is {width[0]} px wide in a {width[1]} px window"


def test_coordinator_sees_the_fridge_excursion_live_and_acknowledges_it(demo: Demo, new_page: Any) -> None:
    page = new_page()
    log_in(page, demo, "coordinator")
    expect(page.get_by_role("heading", name="Coordinator board", level=1)).to_be_visible()
    fridge = page.locator("button.device-card[data-device='fridge-1']")
    expect(fridge).to_contain_text("Online", timeout=UI_S * 1000)
    expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=UI_S * 1000)
    page.evaluate("() => { window.notReloaded = true; }")  # gone if the page reloads

    alert = page.locator("#alert-list > li[data-rule='fridge-too-warm']")
    expect(alert).to_be_visible(timeout=EXCURSION_S * 1000)
    assert page.evaluate("() => window.notReloaded === true"), "the page reloaded"
    expect(alert).to_contain_text("Critical")
    expect(alert).to_contain_text("above 8 °C")
    expect(alert).to_contain_text("Active, not acknowledged")
    expect(fridge).to_contain_text("1 open alert", timeout=UI_S * 1000)
    shot(page, "coordinator-alert-1366")

    comment = "Moving stock to fridge 2; Facilities called"
    alert.get_by_role("button", name="Acknowledge", exact=True).click()
    box = alert.get_by_label("Comment: what is being done")
    expect(box).to_be_focused()
    assert box.get_attribute("maxlength") == "500"
    expect(alert).to_contain_text("No patient identifiers")
    box.fill(comment)
    alert.get_by_role("button", name="Acknowledge alert").click()
    expect(alert).to_have_attribute("data-state", "acknowledged", timeout=UI_S * 1000)
    expect(alert).to_contain_text("Acknowledged")
    expect(alert).to_contain_text("by coordinator")
    expect(alert).to_contain_text(comment)
    expect(alert.get_by_role("button", name="Acknowledge", exact=True)).to_have_count(0)
    shot(page, "coordinator-acknowledged-1366")

    # the API agrees: acknowledged by the logged-in user, with the comment
    alert_id = alert.get_attribute("data-key")
    status, body = demo.api("GET", f"/api/v1/alerts/{alert_id}", demo.token("viewer"))
    assert status == 200, body
    assert (body["state"], body["acknowledged_by"], body["note"]) == ("acknowledged", "coordinator", comment)

    # a device's last 24 h: its card opens a dialog with a chart; Escape closes it
    fridge.click()
    dialog = page.get_by_role("dialog", name="Medication refrigerator 1")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("img", name=re.compile(r"temperature"))).to_be_visible(timeout=UI_S * 1000)
    shot(page, "coordinator-chart-1366")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_supply_sees_the_bin_below_its_reorder_point_and_the_pick_list(demo: Demo, new_page: Any) -> None:
    page = new_page()
    log_in(page, demo, "supply")
    expect(page.get_by_role("heading", name="Supply board", level=1)).to_be_visible()
    # the scenario's busy round (at 30 s) leaves 120 exam gloves: reorder point 150
    gloves = page.locator("#rooms tr.bin[data-sku='GLV-NIT-M']")
    expect(gloves).to_have_attribute("data-level", "below_reorder", timeout=EXCURSION_S * 1000)
    expect(gloves).to_contain_text("Below reorder point")
    expect(gloves).to_contain_text("of par 500")
    pick = page.locator("table.pick-table tr.pick[data-sku='GLV-NIT-M']")
    expect(pick).to_contain_text("packs", timeout=UI_S * 1000)
    expect(pick).to_contain_text("Ward 4B supply room")
    shot(page, "supply-1366")


def test_a_count_submitted_twice_is_counted_once(demo: Demo, new_page: Any) -> None:
    page = new_page()
    log_in(page, demo, "supply")
    form = page.locator("form.count-form")
    expect(form.get_by_label("Bin")).to_be_enabled(timeout=UI_S * 1000)
    expect(form.locator("select[name=bin] option[value^='LIN-SHEET@']")).to_have_count(1, timeout=UI_S * 1000)
    value = form.locator("select[name=bin] option[value^='LIN-SHEET@']").get_attribute("value")
    form.get_by_label("Bin").select_option(value)
    form.get_by_label("Counted quantity").fill("41")
    note = form.get_by_label("Note (optional)")
    assert note.get_attribute("maxlength") == "500"
    note.fill("browser test count")
    form.get_by_role("button", name="Record count").dblclick()
    expect(page.locator("#toast")).to_contain_text("Count recorded", timeout=UI_S * 1000)
    status, body = demo.api(
        "GET", "/api/v1/inventory/transactions?sku=LIN-SHEET&kind=count", demo.token("supply")
    )
    assert status == 200, body
    mine = [e for e in body["items"] if e["note"] == "browser test count"]
    assert len(mine) == 1 and mine[0]["counted"] == 41 and mine[0]["who"] == "supply", body


def test_a_viewer_cannot_acknowledge(demo: Demo, new_page: Any) -> None:
    page = new_page()
    log_in(page, demo, "viewer")
    alert = page.locator("#alert-list > li[data-rule='fridge-too-warm']")
    expect(alert).to_be_visible(timeout=EXCURSION_S * 1000)
    alert_id = alert.get_attribute("data-key")
    expect(page.get_by_text("Read only: your role cannot acknowledge alerts.")).to_be_visible()
    expect(page.get_by_role("button", name="Acknowledge")).to_have_count(0)
    expect(page.get_by_role("button", name="Resolve…")).to_have_count(0)
    expect(page.get_by_role("navigation", name="Pages").get_by_role("link")).to_have_text(
        ["Coordinator board", "Supply board"]
    )
    shot(page, "viewer-1366")
    page.get_by_role("link", name="Supply board").click()
    expect(page.get_by_role("heading", name="Supply board", level=1)).to_be_visible()
    expect(page.locator("form.count-form")).to_have_count(0)
    expect(page.get_by_text("Read only: your role cannot record stock changes.")).to_be_visible()

    # the API refuses it anyway
    status, body = demo.api(
        "POST", f"/api/v1/alerts/{alert_id}/ack", demo.token("viewer"), {"note": "x"}
    )
    assert status == 403 and body["error"]["code"] == "forbidden", body


def test_tester_injects_and_clears_a_fault(demo: Demo, new_page: Any) -> None:
    page = new_page()
    log_in(page, demo, "coordinator")
    page.get_by_role("link", name="Tester").click()
    expect(page.get_by_role("heading", name="Tester", level=1)).to_be_visible()
    card = page.locator("#sim-list > li[data-device='fridge-2']")
    expect(card).to_contain_text("No fault", timeout=UI_S * 1000)
    card.get_by_role("button", name="Door open").click()
    expect(card).to_contain_text("Faults now", timeout=UI_S * 1000)
    shot(page, "tester-1366")
    card.get_by_role("button", name="Clear faults").click()
    expect(card).to_contain_text("No fault", timeout=UI_S * 1000)


def test_the_live_stream_resumes_with_last_event_id_and_reloads_on_reset(demo: Demo, new_page: Any) -> None:
    """live.js against a stream the test plays (Playwright answers GET /api/v1/events): each
    answer ends, as a dropped connection would. The page reconnects with the last id it saw,
    reloads its lists on `reset`, and falls back to polling when the server has no stream."""
    page = new_page()
    seen: list[str | None] = []  # each connection's Last-Event-ID
    requests: list[str] = []
    page.on("request", lambda r: requests.append(urllib.parse.urlsplit(r.url).path))

    def events(route: Any) -> None:
        seen.append(route.request.headers.get("last-event-id"))
        if len(seen) == 1:
            body = 'retry: 200\nid: 41\nevent: ready\ndata: {"last_event_id": 41}\n\n: keepalive\n\n'
            body += 'id: 42\nevent: device\ndata: {"id": "fridge-2", "status": "online"}\n\n'
        elif len(seen) == 2:
            body = "retry: 200\nevent: reset\ndata: {}\n\n"
        else:
            route.fulfill(status=404, json={"error": {"code": "not_found", "message": "Not Found", "field": None}})
            return
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    page.route("**/api/v1/events*", events)
    log_in(page, demo, "viewer")
    expect(page.locator("#live")).to_have_attribute("data-state", "unavailable", timeout=UI_S * 1000)
    expect(page.locator("#live")).to_have_text("Updates every 5 s")
    assert seen[:3] == [None, "42", "42"], seen
    # `reset` (second connection) reloaded the alerts: a GET between the second and third
    # connection (the first live connection's refresh came before the second)
    events_at = [i for i, path in enumerate(requests) if path == "/api/v1/events"]
    assert "/api/v1/alerts" in requests[events_at[1] : events_at[2]], requests


@pytest.mark.parametrize("viewport", [DESKTOP, TABLET], ids=["1366x768", "768x1024"])
def test_pages_fit_the_screen_and_show_the_focus(demo: Demo, new_page: Any, viewport: dict[str, int]) -> None:
    size = f"{viewport['width']}"
    page = new_page(viewport)
    page.goto(f"{demo.base}/")
    expect(page.get_by_label("User name")).to_be_visible(timeout=UI_S * 1000)
    expect(page.locator("#who")).to_be_hidden()  # nobody is logged in
    expect(page.get_by_role("navigation", name="Pages")).to_be_hidden()
    no_horizontal_overflow(page)
    shot(page, f"login-{size}")
    log_in(page, demo, "coordinator")
    for name, heading in (("board", "Coordinator board"), ("supply", "Supply board"), ("tester", "Tester")):
        page.get_by_role("link", name=heading).click()
        expect(page.get_by_role("heading", name=heading, level=1)).to_be_visible()
        expect(page.locator(".summary").first).not_to_have_text("Loading…", timeout=UI_S * 1000)
        no_horizontal_overflow(page)
        shot(page, f"{name}-{size}")
    # the keyboard focus is visible: a focused control has an outline
    page.get_by_role("link", name="Coordinator board").focus()
    page.keyboard.press("Tab")
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), outline
