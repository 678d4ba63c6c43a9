"""Helpers shared by several test modules: cookies, sign-in, the CLI, the Dockerfile.

Fixtures live in conftest.py; plain functions and constants that more than one test
module needs live here, so that no test module imports another.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import io
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import cli
from tests.conftest import ROOT, SAME_ORIGIN, SECRET_ENV, Client, GatewayProcess

# -- what tests running at once share ----------------------------------------------------


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if need be): one holder at a time, across
    the pytest-xdist workers of a run and across runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cache_dir(env: str, name: str) -> Path:
    """A folder kept across runs for what tests install (npm and PyPI packages): `env`
    names it when set, else `name` under the user's cache folder."""
    if os.environ.get(env):
        return Path(os.environ[env])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / name


def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary folder shared by every worker of this run (pytest-xdist gives each worker
    a base folder of its own, inside one for the run)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def checkout_lock(name: str) -> Path:
    """A lock file for a resource of this checkout (a file the code writes next to itself)."""
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"gateway-tests-{digest}-{name}.lock"


# -- cookies ----------------------------------------------------------------------------

FORM_HEADERS = {"Origin": SAME_ORIGIN}


def set_cookies(response: aiohttp.ClientResponse) -> dict[str, dict[str, Any]]:
    """name -> {value, attributes...} from every Set-Cookie of a response."""
    found: dict[str, dict[str, Any]] = {}
    for header in response.headers.getall("Set-Cookie", ()):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        for name, morsel in jar.items():
            found[name] = {"value": morsel.value, "raw": header}
            found[name].update({k: v for k, v in morsel.items() if v != ""})
    return found


def cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


# -- signing in -------------------------------------------------------------------------


async def sign_in(
    client: Client, user: str = "alice", password: str = "wonderland", next_path: str = "/"
) -> dict[str, str]:
    """Sign in through an in-process gateway's /login; the cookies it set."""
    response = await client.post(
        "/login",
        data={"username": user, "password": password, "next": next_path},
        headers=FORM_HEADERS,
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    return {name: c["value"] for name, c in set_cookies(response).items()}


async def sign_in_over_http(http: aiohttp.ClientSession, gateway: GatewayProcess) -> dict[str, str]:
    """Sign alice in through a gateway process's /login; the cookies it set."""
    async with http.post(
        gateway.url + "/login",
        data={"username": "alice", "password": "wonderland"},
        headers=FORM_HEADERS,
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        return {name: c["value"] for name, c in set_cookies(response).items()}


async def status(http: aiohttp.ClientSession, url: str, cookies: dict[str, str]) -> int:
    async with http.get(url, headers=cookie_header(cookies)) as response:
        return response.status


# -- the command line -------------------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    """What a `gateway ...` command returned and printed, like a CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str
    args: tuple[str, ...] = field(default=())


def _main_in_this_process(args: tuple[str, ...], env: dict[str, str], stdin: str) -> CliResult:
    out, err = io.StringIO(), io.StringIO()
    saved_env = {name: os.environ.get(name) for name in env}
    saved_stdin = sys.stdin
    os.environ.update(env)
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as exc:  # argparse: --help, usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdin = saved_stdin
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return CliResult(code, out.getvalue(), err.getvalue(), args)


def run_cli(
    *args: str, secret: str | None = None, env: dict[str, str] | None = None, stdin: str = ""
) -> CliResult:
    """`gateway ARGS...` run in this process: `gateway.cli.main` with its output captured.

    For tests of what a command prints and returns; the process boundary (`python -m
    gateway`, the console script, exit codes of a real process) has its own tests that
    use `gateway_process`. The command runs in a thread of its own, so that it may
    start an event loop of its own (`revoke` on Redis does) while a test's loop runs.
    """
    env = {**(env or {}), **({SECRET_ENV: secret} if secret is not None else {})}
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gateway-cli") as pool:
        return pool.submit(_main_in_this_process, args, env, stdin).result(timeout=60)


def gateway_process(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS...` as a real process, from the checkout."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        input=stdin,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


# -- configs ----------------------------------------------------------------------------

OPEN_ROUTES = """
routes:
  - path: /public/:path*
    auth: public
  - path: /switch/:path*
    auth: public
default: required
"""
CLOSED_ROUTES = OPEN_ROUTES.replace(
    "  - path: /switch/:path*\n    auth: public", "  - path: /switch/:path*\n    auth: deny"
)


# -- the Dockerfile ---------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def args(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def dockerfile_stages(text: str) -> list[Stage]:
    """Instructions per stage; continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments and blank lines may also sit inside a continuation
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    for entry in logical:
        keyword, _, args = entry.partition(" ")
        if keyword.upper() == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((keyword.upper(), args.strip()))
    return stages


STAGES = dockerfile_stages((ROOT / "Dockerfile").read_text())
FINAL = STAGES[-1] if STAGES else Stage("", None)
"""The stage the image runs: its USER, ENV, ENTRYPOINT, HEALTHCHECK."""
