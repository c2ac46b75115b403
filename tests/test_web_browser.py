"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a real
`bystroq serve`, `bystroq listen`, `bystroq consume` and beanstalkd, each a process.

Skipped only where Chromium is not installed and CI is unset (scripts/test installs it).
Screenshots of every page go to the Playwright output folder (test-results/dashboard/);
with BYSTROQ_DOCS_SCREENSHOTS=1 they are also copied to docs/ for the README.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from bystroq.testing import Beanstalkd, config_text, free_port, wait_until

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
READ = "read-token-0123456789abcdef"
WRITE = "write-token-0123456789abcdef"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Launch Debian's Chromium by its path (Playwright's own download is not used)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI; scripts/test installs it (apt)")
        pytest.skip(f"{CHROMIUM} is not installed (scripts/test installs it)")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM)}


@dataclass
class Stack:
    """A served dashboard with a worker and a consumer, on one beanstalkd."""

    url: str
    config_file: Path
    prefix: str
    workdir: Path

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=20)

    def submit(self, job: dict[str, object], token: str | None = None) -> None:
        with self.http(token) as http:
            response = http.post("/v1/submissions/echo", json=job)
            assert response.status_code == 202, response.text

    def state(self, key: str, token: str | None = None) -> str | None:
        with self.http(token) as http:
            response = http.get(f"/v1/submissions/{key}")
        return response.json()["submission"]["state"] if response.status_code == 200 else None


def _bystroq(config: Path, *args: str, env: dict[str, str], log: Path,
             ) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "bystroq", "--config", str(config),
                                 *args], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def running_stack(server: Beanstalkd, workdir: Path, tokens: str | None = None,
                  ) -> Iterator[Stack]:
    """`bystroq serve`, `listen --tube echo --concurrency 4` and `consume`, stopped after."""
    prefix = f"b{uuid.uuid4().hex[:6]}-"
    config = workdir / "beanstalk.yml"
    config.write_text(config_text([server.address], prefix=prefix,
                                  records=f"sqlite:///{workdir / 'records.db'}"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("BYSTROQ_TOKENS", None)
    if tokens:
        env["BYSTROQ_TOKENS"] = tokens
    port = free_port()
    procs = [_bystroq(config, "serve", "--port", str(port), env=env, log=workdir / "serve.log")]
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert procs[0].poll() is None, (workdir / "serve.log").read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout_s=30, interval_s=0.1)
        procs.append(_bystroq(config, "listen", "--tube", "echo", "--concurrency", "4",
                              "--heartbeat-interval", "2", env=env,
                              log=workdir / "listen.log"))
        procs.append(_bystroq(config, "consume", env=env, log=workdir / "consume.log"))
        yield Stack(url, config, prefix, workdir)
    finally:
        for proc in reversed(procs):
            _stop(proc)


@pytest.fixture(scope="module")
def stack(server: Beanstalkd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(server, tmp_path_factory.mktemp("dashboard")) as running:
        yield running


@pytest.fixture
def console_errors(page: Page) -> Iterator[list[str]]:
    """Errors the page logs or throws; the test fails if there are any."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield errors
    assert errors == []


@pytest.fixture(scope="session")
def shots(pytestconfig: pytest.Config) -> Path:
    folder = Path(pytestconfig.getoption("--output")) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _shot(page: Page, shots: Path, name: str) -> None:
    path = shots / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("BYSTROQ_DOCS_SCREENSHOTS"):
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(path, ROOT / "docs" / path.name)


def _wait_state(stack: Stack, key: str, state: str) -> None:
    wait_until(lambda: stack.state(key) == state, timeout_s=30, interval_s=0.1)


def _mark(page: Page) -> None:
    """Tag the document: still tagged later, the page was never reloaded."""
    page.evaluate("window.__notReloaded = true")


def _not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__notReloaded === true")


def test_every_page_renders_without_console_errors(
    stack: Stack, page: Page, console_errors: list[str], shots: Path,
) -> None:
    stack.submit({"submissionID": "shot-done", "message": "hello", "progress": 3})
    stack.submit({"submissionID": "shot-failed", "fail": "the input file is empty"})
    _wait_state(stack, "shot-failed", "failed")
    _wait_state(stack, "shot-done", "completed")
    with stack.http() as http:  # the worker's heartbeat has been read: the overview lists it
        wait_until(lambda: http.get("/v1/workers").json() != [], timeout_s=20)
    with stack.http() as http:
        created = http.post("/v1/batches", json={"category": "echo", "concurrency": 2,
                                                  "records": [{"message": str(n)}
                                                              for n in range(6)]})
        assert created.status_code == 201
    pages = [("overview", "/", "Overview"), ("submissions", "/submissions", "Submissions"),
             ("submission", "/submission?id=shot-failed", "Submission shot-failed"),
             ("batches", "/batches", "Batches"), ("dead-letters", "/dead", "Dead letters"),
             ("queues", "/queues", "Queues"), ("audit", "/audit", "Audit")]
    for name, path, heading in pages:
        page.goto(stack.url + path)
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        if name in ("overview", "submissions", "submission", "batches"):
            expect(page.locator("#live-state")).to_have_text("on")
        _shot(page, shots, name)
    page.emulate_media(color_scheme="dark")
    page.goto(stack.url + "/submissions")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(21, 24, 27)"  # the dark palette
    _shot(page, shots, "submissions-dark")
    page.emulate_media(color_scheme="light")
    page.goto(stack.url + "/submission?id=shot-done")
    expect(page.locator("pre.json").first).to_contain_text('"message": "hello"')
    # Keyboard: the skip link is the first stop, and leads to the content.
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()


def test_a_running_jobs_progress_bar_moves_without_a_reload(
    stack: Stack, page: Page, console_errors: list[str], shots: Path,
) -> None:
    stack.submit({"submissionID": "moving", "progress": 40, "step_s": 0.25})
    _wait_state(stack, "moving", "started")
    page.goto(stack.url + "/submissions")
    _mark(page)
    bar = page.locator('tr[data-submission="moving"] progress')
    first = bar.get_attribute("value") or "0"
    expect(bar).not_to_have_attribute("value", first, timeout=20_000)
    expect(page.locator('tr[data-submission="moving"] [data-field="eta"]')).to_contain_text(
        "ETA")
    _shot(page, shots, "progress")
    expect(page.locator('tr[data-submission="moving"] [data-field="state"]')).to_have_text(
        "completed", timeout=30_000)
    expect(bar).to_have_attribute("value", "100")
    _not_reloaded(page)


def test_cancel_a_running_job_and_see_it_cancelled(
    stack: Stack, page: Page, console_errors: list[str],
) -> None:
    stack.submit({"submissionID": "to-cancel", "sleep_s": 60})
    _wait_state(stack, "to-cancel", "started")
    page.goto(stack.url + "/submission?id=to-cancel")
    badge = page.locator('section[data-submission="to-cancel"] [data-field="state"]')
    expect(badge).to_have_text("started")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".note")).to_contain_text("cancel sent to worker")
    _mark(page)
    expect(badge).to_have_text("cancelled", timeout=20_000)
    _not_reloaded(page)
    assert stack.state("to-cancel") == "cancelled"


def test_kick_a_buried_job_and_see_it_complete(
    stack: Stack, page: Page, console_errors: list[str],
) -> None:
    marker = stack.workdir / "kick-me-ok"
    stack.submit({"submissionID": "kick-me", "fail_until_file": str(marker)})
    _wait_state(stack, "kick-me", "failed")
    page.goto(stack.url + "/dead?category=echo&q=kick-me")
    row = page.locator("tr", has_text="kick-me")
    expect(row).to_contain_text("buried")
    marker.touch()
    row.get_by_role("button", name="Kick").click()
    expect(page.locator(".note")).to_contain_text("kicked")
    page.goto(stack.url + "/submission?id=kick-me")
    badge = page.locator('section[data-submission="kick-me"] [data-field="state"]')
    expect(badge).to_have_text("completed", timeout=20_000)


def test_a_batch_reaches_100_percent_live(
    stack: Stack, page: Page, console_errors: list[str], shots: Path,
) -> None:
    with stack.http() as http:
        created = http.post("/v1/batches", json={
            "category": "echo", "concurrency": 2,
            "records": [{"sleep_s": 0.3, "message": str(n)} for n in range(12)]})
        assert created.status_code == 201
        batch_id = created.json()["batch"]["batchID"]
    page.goto(stack.url + f"/batch?id={batch_id}")
    _mark(page)
    bar = page.locator(f'section[data-batch="{batch_id}"] progress')
    expect(bar).to_have_attribute("value", "100", timeout=40_000)
    expect(page.locator(f'section[data-batch="{batch_id}"] [data-field="state"]')
           ).to_have_text("completed")
    _shot(page, shots, "batch")
    _not_reloaded(page)


def test_read_only_token_sees_no_buttons_and_a_forged_post_is_refused(
    server: Beanstalkd, tmp_path: Path, page: Page, console_errors: list[str],
    shots: Path,
) -> None:
    with running_stack(server, tmp_path, tokens=f"read:{READ},write:{WRITE}") as secured:
        secured.submit({"submissionID": "ro-1", "sleep_s": 60}, token=WRITE)
        wait_until(lambda: secured.state("ro-1", WRITE) == "started", timeout_s=30,
                   interval_s=0.1)
        page.goto(secured.url + "/submission?id=ro-1")
        expect(page).to_have_url(f"{secured.url}/login?next=/submission%3Fid%3Dro-1")
        _shot(page, shots, "login")
        page.get_by_label("Token").fill(READ)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Submission ro-1")
        assert page.locator("form[action*='/actions/'] button").count() == 0
        for path in ("/queues", "/dead", "/batches"):
            page.goto(secured.url + path)
            expect(page.get_by_role("heading", level=1)).to_be_visible()
            assert page.locator("form[action*='/actions/'] button").count() == 0, path
        status = page.evaluate("""async () => {
            const body = new URLSearchParams({submission: "ro-1"});
            const r = await fetch("/actions/cancel", {method: "POST", body});
            return r.status; }""")
        assert status == 403
        console_errors.clear()  # the browser logs the refused request itself
        tube = f"{secured.prefix}echo"
        forged = page.request.post(secured.url + "/actions/queue",
                                   form={"tube": tube, "op": "purge", "confirm": tube})
        assert forged.status == 403
        assert secured.state("ro-1", WRITE) == "started"
        with secured.http(WRITE) as http:
            http.post("/v1/submissions/ro-1/cancel")


def test_updates_pause_while_hidden_and_poll_without_the_stream(
    stack: Stack, page: Page, console_errors: list[str],
) -> None:
    page.goto(stack.url + "/submissions")
    live = page.locator("#live-state")
    expect(live).to_have_text("on")
    page.evaluate("""() => {
        Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
        document.dispatchEvent(new Event("visibilitychange")); }""")
    expect(live).to_have_text("paused (tab hidden)")
    page.evaluate("""() => {
        Object.defineProperty(document, "hidden", {configurable: true, get: () => false});
        document.dispatchEvent(new Event("visibilitychange")); }""")
    expect(live).to_have_text("on")

    # No stream to be had: the page polls, and the bar still moves.
    page.route("**/v1/events*", lambda route: route.fulfill(status=503, body="away"))
    stack.submit({"submissionID": "polled", "progress": 40, "step_s": 0.25})
    _wait_state(stack, "polled", "started")
    page.goto(stack.url + "/submissions")
    expect(live).to_have_text("on (polling)")
    _mark(page)
    bar = page.locator('tr[data-submission="polled"] progress')
    first = bar.get_attribute("value") or "0"
    expect(bar).not_to_have_attribute("value", first, timeout=20_000)
    _not_reloaded(page)
    console_errors.clear()  # the browser logs the refused stream


def test_workers_page_shows_what_a_worker_runs_and_quiets_it(
    server: Beanstalkd, tmp_path: Path, page: Page, console_errors: list[str],
    shots: Path,
) -> None:
    with running_stack(server, tmp_path) as own:
        own.submit({"submissionID": "busy-1", "sleep_s": 60})
        _wait_state(own, "busy-1", "started")
        page.goto(own.url + "/")
        panel = page.locator("section", has=page.locator("#live-workers"))
        expect(panel.locator("tr[data-worker]")).to_have_count(1, timeout=20_000)
        page.goto(own.url + "/workers")
        row = page.locator("tr[data-worker]")
        expect(row).to_contain_text("busy-1", timeout=20_000)  # the page reads itself again
        expect(row.locator('[data-field="state"]')).to_have_text("running")
        _shot(page, shots, "workers")
        row.get_by_role("button", name="Quiet").click()
        expect(page.locator(".note")).to_contain_text("asked to quiet")
        expect(page.locator('tr[data-worker] [data-field="state"]')).to_have_text(
            "quiet", timeout=20_000)
        assert not page.get_by_role("button", name="Quiet").is_visible()
        with own.http() as http:  # the job would hold the worker's drain at the end
            http.post("/v1/submissions/busy-1/cancel")
