"""A real browser (Debian's Chromium, driven by Playwright) and the conception's worker.

Playwright never downloads a browser here: it launches the system's ``chromium``. Where that
is missing the browser tests are skipped locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.engine import PASSWORD, USER, Engine
from tests.support.tools import missing

# Playwright's auto-waiting budget for each action and expectation; generous for a busy CI box.
TIMEOUT_MS = 30_000

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

WORKER_TARGET = "camunda_relay.examples.conception"
WORKER_ID = "browser-test-worker"
WORKER_STOP_SECONDS = 60
# A worker stopped during a long poll leaves that poll pending in the engine, which still locks
# the next matching task for the gone worker until the lock expires. A short poll and a short
# lock keep that from holding up the seed tasks of the tests that run after this module.
WORKER_SETTINGS = {"CAMUNDA_LONG_POLL": "1", "CAMUNDA_LOCK_DURATION": "10"}


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        missing("Chromium", "install Debian's chromium package")
    assert path is not None
    return path


# Module scope, not session: while Playwright's sync API is open it keeps an event loop
# running in this thread, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    # launch() gives every run a fresh temporary profile (user data dir) of its own.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@dataclass(frozen=True)
class WorkerProcess:
    """``camunda-relay worker`` running in the background, its output in ``log``."""

    process: subprocess.Popen[bytes]
    log: Path

    def assert_running(self) -> None:
        """Fail at once, with the worker's output, when it has exited."""
        code = self.process.poll()
        if code is not None:
            output = self.log.read_text(errors="replace")[-4000:]
            raise AssertionError(f"the worker exited with code {code}:\n{output}")


@pytest.fixture(scope="module")
def worker(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """The conception's worker against the test engine, stopped with SIGTERM at the end."""
    home = tmp_path_factory.mktemp("worker")  # its journal goes here (relative default)
    log = home / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMUNDA_")}
    env.update(
        CAMUNDA_URL=engine.rest_url,
        CAMUNDA_USER=USER,
        CAMUNDA_PASSWORD=PASSWORD,
        SAMPLE_WORK_SECONDS="0.2",
        **WORKER_SETTINGS,
    )
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "camunda_relay.cli",
                "worker",
                WORKER_TARGET,
                "--worker-id",
                WORKER_ID,
            ],
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield WorkerProcess(process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
            pytest.fail(f"the worker did not stop within {WORKER_STOP_SECONDS} s of SIGTERM")
