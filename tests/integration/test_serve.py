"""`tether serve` against a real running job: its JSON, its metrics (read by Prometheus' own
parser), its token, and its page in a real headless Chromium."""

from __future__ import annotations

import functools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.rig.live import running, wait_for, write_job
from tests.rig.run import tether

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PAGE_DEADLINE = 2.0  # from the change showing in /api/status to the page showing it


@contextmanager
def serving(env: dict[str, str], *args: str) -> Iterator[tuple[str, list[str]]]:
    """`tether serve --port 0 ARGS` running; yields its URL (its first line) and the lines it
    printed. Stopped by SIGTERM at the end, which must end it cleanly (exit 0)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "serve", "--port", "0", *args], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    out: list[str] = []

    def read() -> None:
        for ln in proc.stdout or []:
            lines.put(ln)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        try:
            url = lines.get(timeout=60).strip()
        except queue.Empty:
            raise AssertionError("tether serve printed no URL within 60 s") from None
        out.append(url)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/"), url
        yield url, out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        err = proc.stderr.read() if proc.stderr else ""
        reader.join(30)  # to the end of its output: the last line may still be on its way to the queue
        while not lines.empty():
            out.append(lines.get().rstrip("\n"))
        assert "Traceback" not in err, err
        assert rc == 0, f"exit {rc}: {err}"
        assert "tether serve: stopped" in out[-1]


def get(url: str, token: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, errors included."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def api(url: str, token: str | None = None) -> dict[str, dict[str, Any]]:
    code, _, body = get(url + "api/status", token)
    assert code == 200, body
    return {j["job"]: j for j in json.loads(body)["jobs"]}


@pytest.fixture
def live_job(tmp_path: Path, tether_env: dict[str, str]) -> Iterator[tuple[Path, Path]]:
    """A continuous local mirror job `live`, running, with its first pass done."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "first.txt").write_text("first\n")
    write_job(tether_env, "live", src, [str(dst)], interval=0)
    with running(tether_env, "live"):
        wait_for(lambda: (dst / "first.txt").exists(), 30, "the first pass")
        yield src, dst


def test_api_and_metrics_hold_the_running_job(
    live_job: tuple[Path, Path], tether_env: dict[str, str], tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    src, dst = live_job
    (src / "more.bin").write_bytes(os.urandom(50_000))
    wait_for(lambda: (dst / "more.bin").exists(), 30, "the change to arrive")
    other, odd = tmp_path / "other", tmp_path / 'odd "target" \\ here'  # a label value to escape
    other.mkdir()
    (other / "x.txt").write_text("x\n")
    write_job(tether_env, "other", other, [str(odd)])
    tether(["sync", "other"], tether_env, check_rc=0)  # a job run by hand: known from its events
    with serving(tether_env) as (url, _):
        wait_for(lambda: api(url)["live"]["rows"][0]["files_sent"] >= 1, 30, "the status file to count the send")
        jobs = api(url)
        live = jobs["live"]
        assert live["running"] and live["pid"] and live["state"] == "running"
        [row] = live["rows"]
        assert (row["target"], row["up"], row["target_state"] in ("idle", "syncing")) == (str(dst), True, True)
        assert jobs["other"]["running"] is False and jobs["other"]["rows"][0]["state"] == "stopped"

        code, ctype, text = get(url + "metrics")
        assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
        samples = {(s.name, s.labels.get("job"), s.labels.get("target")): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip
        now = api(url)["live"]["rows"][0]
        assert samples[("tether_job_running", "live", None)] == 1
        assert samples[("tether_job_running", "other", None)] == 0
        assert samples[("tether_target_up", "other", str(odd))] == 0  # escaped, and parsed back the same
        assert samples[("tether_target_last_success_timestamp_seconds", "other", str(odd))] > 0
        assert samples[("tether_target_up", "live", str(dst))] == 1
        assert samples[("tether_target_files_sent_total", "live", str(dst))] == now["files_sent"] >= 1
        assert samples[("tether_target_bytes_sent_total", "live", str(dst))] == now["bytes_sent"] >= 50_000
        assert samples[("tether_target_last_success_timestamp_seconds", "live", str(dst))] == now["last_success"]
        assert samples[("tether_target_pending", "live", str(dst))] == now["pending"]
        assert samples[("tether_watches", "live", None)] == live["watches"] >= 1
        assert ("tether_errors_total", "live", str(dst)) in samples
        assert ("tether_conflicts_total", "live", str(dst)) in samples
        limit = live["watch_limit"]
        assert limit is None or samples[("tether_watch_limit", None, None)] == limit

        code, _, page = get(url)
        assert code == 200 and "<title>tether status</title>" in page
        assert "http://" not in page.replace(url, "") and "https://" not in page  # nothing fetched from elsewhere
        assert get(url + "nothing-here")[0] == 404
    shown = tether(["status"], tether_env, check_rc=0).stdout
    assert shown.splitlines()[0].split()[:3] == ["JOB", "TARGET", "STATE"], shown


def test_a_token_guards_every_route_and_other_addresses_need_one(tmp_path: Path, tether_env: dict[str, str]) -> None:
    bare = tether(["serve", "--host", "0.0.0.0", "--port", "0"], tether_env, check_rc=2)
    assert "not a loopback address" in bare.stderr and "--token-file" in bare.stderr
    missing = tether(["serve", "--token-file", str(tmp_path / "nope")], tether_env, check_rc=2)
    assert "no such file" in missing.stderr
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    token_file.chmod(0o600)
    with serving(tether_env, "--token-file", str(token_file)) as (url, _):
        for route in ("", "api/status", "metrics"):
            assert get(url + route)[0] == 401
            assert get(url + route, "wrong")[0] == 401
            assert get(url + route, "s3cret-token")[0] == 200
        assert get(url + "?token=s3cret-token")[0] == 200  # the page, as a link
        assert get(url + "api/status?token=s3cret-token")[0] == 401  # the data wants the header
        assert get(url + "elsewhere", "s3cret-token")[0] == 404
    # with a token, any address; asked here only through loopback. Started as a shell starts
    # `tether serve &`, with SIGINT ignored: kill -INT still stops it
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether", "serve", "--host", "0.0.0.0", "--port", "0", "--token-file", str(token_file)],
        env=tether_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        preexec_fn=functools.partial(signal.signal, signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip().rsplit(":", 1)[1].rstrip("/")
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 401
        assert get(f"http://127.0.0.1:{port}/metrics", "s3cret-token")[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C stops it as cleanly as SIGTERM
        assert proc.wait(30) == 0
        assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def _browser_or_skip() -> Any:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `bash scripts/setup --dev` installs Debian's chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is missing: `bash scripts/setup --dev` installs it into .venv")
    return sync_playwright


def test_the_page_in_chromium_shows_the_running_job_and_each_change_within_2_s(
    live_job: tuple[Path, Path], tether_env: dict[str, str], tmp_path: Path
) -> None:
    """The 2 s run from the moment /api/status shows the change: how fast the job carries a file
    is measured elsewhere (and a busy machine may take longer), this is the page's own delay."""
    sync_playwright = _browser_or_skip()
    src, _ = live_job
    cell = 'document.querySelector(`tr[data-job="live"] td[data-field="${f}"]`)'
    with serving(tether_env) as (url, _), sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        )  # fmt: skip
        try:
            page = context.new_page()
            page.goto(url)
            page.wait_for_function(f"(f) => {cell}?.textContent === 'running/idle'", arg="state", timeout=30_000)
            assert page.locator("#updated").text_content() != "(not yet)"
            assert "live: running (pid" in (page.locator("#jobs").text_content() or "")

            before = api(url)["live"]["rows"][0]["files_sent"]
            changed = time.monotonic()
            (src / "new.txt").write_text("a change the page must show\n")
            wait_for(lambda: api(url)["live"]["rows"][0]["files_sent"] > before, 30, "/api/status to count the file")
            seen = time.monotonic()
            page.wait_for_function(f"([f, n]) => Number({cell}?.textContent) > n", arg=["files_sent", before],
                                   timeout=PAGE_DEADLINE * 1000)  # fmt: skip
            shown = time.monotonic()
            print(
                f"files sent: on the page {shown - seen:.3f} s after /api/status, {shown - changed:.3f} s after writing"
            )
            assert shown - seen <= PAGE_DEADLINE
            shots = [tmp_path / "status-page-running.png", tmp_path / "status-page-stopped.png"]
            page.screenshot(path=str(shots[0]), full_page=True)

            tether(["stop", "live"], tether_env, check_rc=0)
            wait_for(lambda: not api(url)["live"]["running"], 30, "/api/status to see the job stopped")
            seen = time.monotonic()
            page.wait_for_function(f"(f) => {cell}?.textContent === 'stopped'", arg="state",
                                   timeout=PAGE_DEADLINE * 1000)  # fmt: skip
            shown = time.monotonic()
            print(f"stopped: on the page {shown - seen:.3f} s after /api/status")
            assert shown - seen <= PAGE_DEADLINE
            page.screenshot(path=str(shots[1]), full_page=True)
            for shot in shots:
                print(f"screenshot: {shot}")
                if os.environ.get("TETHER_SCREENSHOT_DIR"):  # kept past the test's tmp_path, for a person to see
                    shutil.copy(shot, Path(os.environ["TETHER_SCREENSHOT_DIR"]) / shot.name)
        finally:
            context.close()
