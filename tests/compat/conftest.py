"""Real third-party apps behind a real `gateway serve`, driven by headless Chromium.

Each app is installed by this suite itself, from PyPI (a venv of its own per app, one
pinned version) or from npm (a folder of its own), into a cache folder:
`$GATEWAY_COMPAT_CACHE`, else `$XDG_CACHE_HOME/gateway-compat`, else
`~/.cache/gateway-compat`. A fresh machine installs on first run; later runs reuse the
folder (a `.ready` file inside says the install finished). Installs are time-bound; a test
is skipped only when the registry cannot be reached, and fails on any other install error.

Each app runs with its own defaults, its own auth off and no setting for the proxy, on
loopback, behind a gateway with a users file (alice / wonderland), `cookies.secure: false`
(plain http) and the default `preserve_host: true`.

Skip the whole suite locally with `pytest -m "not compat"`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import GatewayProcess, config_text, free_port, session_extra
from tests.helpers import cache_dir, locked

USER, PASSWORD = "alice", "wonderland"  # tests.conftest.USERS
INSTALL_TIMEOUT = 600  # seconds, per app, first run only (JupyterLab, cold: about 30 s)
APP_START_TIMEOUT = 60  # seconds for an installed app to answer on its port


def _pypi_probe(name: str) -> str:
    index = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"
    return f"{index.rstrip('/')}/{name}/"


def _npm_probe(name: str) -> str:
    registry = os.environ.get("NPM_CONFIG_REGISTRY") or "https://registry.npmjs.org"
    return f"{registry.rstrip('/')}/{name}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "compat: real third-party apps behind the gateway, driven by Chromium"
    )


def cache_root() -> Path:
    return cache_dir("GATEWAY_COMPAT_CACHE", "gateway-compat")


# -- installs ---------------------------------------------------------------------------


def _unreachable(url: str) -> str | None:
    """Why the registry at `url` cannot be reached, or None when it answers."""
    try:
        with urllib.request.urlopen(url, timeout=15):  # noqa: S310 - a fixed registry URL
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except OSError as error:
        return f"{type(error).__name__}: {error}"


def _install(
    what: str,
    target: Path,
    steps: list[list[str]],
    probe: str,
    timeout: float,
    env: dict[str, str] | None = None,
) -> Path:
    """Run `steps` into `target` once; later calls find `.ready` and return at once."""
    ready = target / ".ready"
    if ready.exists():
        return target
    with locked(target.with_name(target.name + ".lock")):
        if ready.exists():
            return target
        reason = _unreachable(probe)  # a closed network: skip now, not after pip's retries
        if reason is not None:
            pytest.skip(f"installing {what}: registry {probe} unreachable ({reason})")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        log = target.with_name(target.name + ".install.log")
        started = time.monotonic()
        with log.open("wb") as sink:
            for step in steps:
                left = timeout - (time.monotonic() - started)
                sink.write(("$ " + " ".join(step) + "\n").encode())
                sink.flush()
                try:
                    done = subprocess.run(
                        step,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        timeout=max(left, 1),
                        env={**os.environ, **(env or {})},
                        cwd=target,
                        check=False,
                    )
                    failure = None if done.returncode == 0 else f"exit {done.returncode}"
                except subprocess.TimeoutExpired:
                    failure = f"not done within {timeout:.0f}s"
                if failure is not None:
                    reason = _unreachable(probe)
                    shutil.rmtree(target, ignore_errors=True)
                    if reason is not None:
                        pytest.skip(f"installing {what}: registry {probe} unreachable ({reason})")
                    tail = log.read_text(errors="replace")[-3000:]
                    pytest.fail(f"installing {what} failed ({failure}); {log}:\n{tail}")
        ready.write_text(f"{what}\ninstalled in {time.monotonic() - started:.1f}s\n")
        print(f"installed {what} into {target} in {time.monotonic() - started:.1f}s")
    return target


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def python_app(name: str, version: str, *extra: str) -> Path:
    """A venv of its own with `name==version` (and `extra` pins) from PyPI: its bin folder."""
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    requirements = [f"{name}=={version}", *extra]
    target = cache_root() / f"{name}-{version}-{python}-{_key(*requirements)}"
    venv_python = str(target / "bin" / "python")
    if not Path(venv_python).exists():  # its base Python is gone (a broken link): install again
        (target / ".ready").unlink(missing_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(target)],
        [venv_python, "-m", "pip", "install", "--disable-pip-version-check", *requirements],
    ]
    _install(f"{name} {version} (PyPI)", target, steps, _pypi_probe(name), INSTALL_TIMEOUT)
    return target / "bin"


def node_app(name: str, packages: list[str]) -> Path:
    """A folder with `packages` (`name@version`) npm-installed: its node_modules folder."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("node and npm are needed for the Node.js compat app (Debian: nodejs npm)")
    target = cache_root() / f"node-{name}-{_key(*packages)}"
    steps = [
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--no-package-lock",
            "--prefix",
            str(target),
            *packages,
        ]
    ]
    first = packages[0].rsplit("@", 1)[0]
    _install(
        f"{name}: {' '.join(packages)} (npm)",
        target,
        steps,
        _npm_probe(first),
        INSTALL_TIMEOUT,
        env={
            "npm_config_cache": str(cache_root() / "npm-cache"),
            "npm_config_update_notifier": "false",
        },
    )
    return target / "node_modules"


# -- running an app ---------------------------------------------------------------------


@dataclass
class App:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback only
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer: it is up
    except OSError:
        return False


@pytest.fixture
def run_app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """Start an app on a free loopback port (`{port}` in argv and env); stopped at teardown."""
    started: list[App] = []

    def start(
        name: str,
        argv: list[str],
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        ready_path: str = "/",
    ) -> App:
        port = free_port()
        log = tmp_path / f"{name}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [arg.replace("{port}", str(port)) for arg in argv],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env={
                    **os.environ,
                    **{k: v.replace("{port}", str(port)) for k, v in (env or {}).items()},
                },
                start_new_session=True,  # its own process group: kernels, workers...
            )
        app = App(f"http://127.0.0.1:{port}", port, proc, log)
        started.append(app)
        deadline = time.monotonic() + APP_START_TIMEOUT
        while not _answers(app.url + ready_path):
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{app.output()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{name} did not answer within {APP_START_TIMEOUT}s:\n{app.output()}")
            time.sleep(0.1)
        return app

    yield start
    for app in started:
        _stop(app.proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # whatever it started (a Jupyter kernel) goes with it
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


# -- the gateway in front ---------------------------------------------------------------

ROUTES = """
routes:
  - path: /:path*
    auth: required
default: required
"""


@pytest.fixture
def gateway_for(
    spawn_gateway: Callable[..., GatewayProcess], tmp_path: Path
) -> Callable[..., GatewayProcess]:
    """A real `gateway serve` in front of an app URL: sign-in with the users file,
    plain-http cookies, every path required, preserve_host left at its default."""

    def start(upstream: str, extra: str = "") -> GatewayProcess:
        text = config_text(upstream, extra=session_extra(tmp_path) + extra, routes=ROUTES)
        # apps answer slower than the unit tests' echo upstream (kernel start, first page)
        text = text.replace("upstream_timeout: 1s", "upstream_timeout: 60s")
        return spawn_gateway(text)

    return start


# -- the browser ------------------------------------------------------------------------

# Every WebSocket a page opens, recorded before any of the page's scripts run.
WEBSOCKET_RECORDER = """
(() => {
  const Native = window.WebSocket;
  const seen = (window.__sockets = []);
  function Recorded(url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    const entry = { url: String(url), created: Date.now(), opened: null, closed: null, code: null };
    seen.push(entry);
    ws.addEventListener('open', () => { entry.opened = Date.now(); });
    ws.addEventListener('close', (e) => { entry.closed = Date.now(); entry.code = e.code; });
    return ws;
  }
  Recorded.prototype = Native.prototype;
  for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Recorded[k] = Native[k];
  window.WebSocket = Recorded;
})();
"""


def _find(*names: str) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium; every page records its WebSockets in `window.__sockets`."""
    binary = _find("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    chromedriver = _find("chromedriver")
    if binary is None or chromedriver is None:
        pytest.skip(
            "chromium and chromedriver needed (Debian: apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        # no calls home: this machine's network is closed, and the test needs none
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(argument)
    chrome = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        chrome.set_page_load_timeout(60)
        chrome.set_script_timeout(30)
        chrome.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": WEBSOCKET_RECORDER}
        )
        yield chrome
    finally:
        chrome.quit()


def wait(driver: webdriver.Chrome, seconds: float = 20) -> WebDriverWait:  # type: ignore[type-arg]
    """An explicit wait that rides over page loads (elements gone stale or not there yet)."""
    return WebDriverWait(
        driver,
        seconds,
        poll_frequency=0.1,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )


def path_of(driver: webdriver.Chrome) -> str:
    return urlsplit(driver.current_url).path


def sign_in(driver: webdriver.Chrome, gateway: GatewayProcess, path: str) -> None:
    """Open `path` on the gateway, meet its login page, sign in, land back on `path`."""
    driver.get(gateway.url + path)
    wait(driver).until(lambda d: path_of(d) == "/login", "the gateway's login page")
    driver.find_element(By.NAME, "username").send_keys(USER)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait(driver).until(lambda d: path_of(d) != "/login", "leaving the login page after sign-in")


def log_out(driver: webdriver.Chrome) -> None:
    """What a sign-out button does: a same-origin POST to the gateway's logout path,
    from the app's page (which stays open); the gateway answers 303 to its login page."""
    answer = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch('/logout', {method: 'POST', credentials: 'same-origin'})
          .then(r => done([r.status, r.url]), e => done([0, String(e)]));
        """
    )
    status, url = answer
    assert status == 200 and urlsplit(url).path == "/login", f"logout answered {answer}"


def sockets(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """What `WEBSOCKET_RECORDER` saw: url, and created/opened/closed (ms) and close code."""
    found: list[dict[str, Any]] = driver.execute_script("return window.__sockets || []")
    return found


def dump(gateway: GatewayProcess, app: App | None, driver: webdriver.Chrome | None = None) -> str:
    """What to print when a compat test fails: both logs, and where the browser was."""
    parts = [f"--- gateway log ({gateway.log}):\n{gateway.log.read_text()[-6000:]}"]
    if app is not None:
        parts.append(f"--- app log ({app.log}):\n{app.output()[-6000:]}")
    if driver is not None:
        with contextlib.suppress(Exception):
            parts.append(f"--- browser at {driver.current_url}")
            shot = gateway.log.with_name("browser.png")
            driver.save_screenshot(str(shot))
            parts.append(f"--- screenshot: {shot}")
            parts.append(f"--- sockets: {sockets(driver)}")
    return "\n".join(parts)
