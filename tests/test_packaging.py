"""What CI can check of the container image without a Docker engine.

The wheel is built from exactly the files the image build sees (the build stage's COPY
lines, filtered by .dockerignore), installed into a fresh venv, and its `gateway
check-config` run on the shipped config from outside the checkout. The Dockerfile itself
is read as text: stages, user, healthcheck, entrypoint, nothing to build with at run time.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from gateway.config import Config, Listen, load
from tests.conftest import ROOT
from tests.helpers import FINAL, STAGES, Stage, locked, run_dir

SECRET = "packaging-test-secret-" + "x" * 32  # HS256 wants at least 32 bytes


# -- reading the Dockerfile and .dockerignore ------------------------------------------


def build_stage() -> Stage:
    """The stage the final one copies from."""
    sources = {m for a in FINAL.args("COPY") for m in re.findall(r"--from=(\S+)", a)}
    (stage,) = [s for s in STAGES[:-1] if s.name in sources]
    return stage


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex; a pattern that
    matches a directory also matches everything under it."""
    pattern = posixpath.normpath(pattern.lstrip("/"))
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"(?:/.*)?\Z")


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _glob_regex(line.lstrip("!").strip())))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches decides; `!` takes the path back in."""
    result = False
    for negated, regex in rules:
        if regex.match(path):
            result = not negated
    return result


def build_context(stage: Stage, into: Path) -> Path:
    """Copy what `stage` COPYs from the build context into `into`; returns its WORKDIR there."""
    rules = dockerignore()
    workdir = "/"
    for keyword, args in stage.instructions:
        if keyword == "WORKDIR":
            workdir = posixpath.join(workdir, args)
        if keyword != "COPY" or "--from" in args:
            continue
        *sources, dest = [w for w in shlex.split(args) if not w.startswith("--")]
        target = into / posixpath.join(workdir, dest).lstrip("/")
        for source in sources:
            assert not ignored(source, rules), f"COPY {source}: .dockerignore leaves it out"
            origin = ROOT / source
            if origin.is_dir():
                for path in sorted(origin.rglob("*")):
                    relative = path.relative_to(ROOT).as_posix()
                    if path.is_file() and not ignored(relative, rules):
                        copy = target / path.relative_to(origin)
                        copy.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, copy)
            else:
                copy = target / origin.name if dest.endswith("/") else target
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, copy)
    return into / workdir.lstrip("/")


def default_listeners(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Listen, Listen]:
    """listen and admin_listen as the loader fills them in when the config leaves them out."""
    monkeypatch.setenv("PACKAGING_TEST_SECRET", SECRET)
    path = tmp_path / "minimal.yaml"
    path.write_text(
        "upstream: http://127.0.0.1:3000\ntokens:\n  secret_env: PACKAGING_TEST_SECRET\n"
    )
    config = load(path)
    return config.listen, config.admin_listen


def load_shipped(monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    return load(ROOT / "config.yaml")


# -- the Dockerfile -------------------------------------------------------------------


def test_dockerfile_builds_in_one_stage_and_runs_from_another() -> None:
    assert len(STAGES) >= 2
    names = {stage.name for stage in STAGES[:-1]}
    assert FINAL.base not in names, "the final stage must start from a base image, fresh"
    assert any("--from=" in args for args in FINAL.args("COPY")), "nothing taken from the build"


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = FINAL.args("USER")
    assert users, "the final stage sets no USER: it would run as root"
    user, _, group = users[-1].partition(":")
    # numeric: Kubernetes' runAsNonRoot can only verify a numeric user
    assert user.isdigit() and int(user) != 0, users[-1]
    assert not group or (group.isdigit() and int(group) != 0), users[-1]


def test_entrypoint_is_gateway_serve() -> None:
    entrypoints = FINAL.args("ENTRYPOINT")
    # exec form: the gateway is PID 1 and gets docker stop's SIGTERM itself, not a shell
    assert entrypoints and entrypoints[-1].startswith("["), f"not exec form: {entrypoints}"
    assert json.loads(entrypoints[-1]) == ["gateway", "serve"]


def test_healthcheck_asks_the_admin_listener(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = FINAL.args("HEALTHCHECK")
    assert checks, "no HEALTHCHECK"
    match = re.search(r"http://(127\.0\.0\.1|localhost|\[::1\]):(\d+)(/\w+)", checks[-1])
    assert match, checks[-1]
    listen, admin = default_listeners(tmp_path, monkeypatch)
    shipped = load_shipped(monkeypatch)
    assert int(match.group(2)) == admin.port == shipped.admin_listen.port
    assert match.group(3) == "/healthz"
    exposed = {int(p.split("/")[0]) for args in FINAL.args("EXPOSE") for p in args.split()}
    assert {listen.port, admin.port} <= exposed


def test_final_stage_has_no_build_tools_and_no_pip_cache() -> None:
    no_cache = any("PIP_NO_CACHE_DIR=1" in args for args in FINAL.args("ENV"))
    for args in FINAL.args("RUN"):
        installs = re.findall(r"(?:apt-get|apt|apk)\s+(?:install|add)\s+([^&;|]*)", args)
        for packages in installs:
            tools = re.findall(r"\b(gcc|g\+\+|clang|make|build-essential|[\w.+-]+-dev)\b", packages)
            assert not tools, f"build tools in the final image: {tools}"
        if re.search(r"\bpip3?\b.*\binstall\b", args):
            assert no_cache or "--no-cache-dir" in args, f"pip cache left in the image: {args}"


def test_dockerignore_keeps_repository_state_and_secrets_out_of_the_context() -> None:
    rules = dockerignore()
    for path in (".git", ".git/config", ".venv", ".venv/bin/python", "tests", "tests/x.py"):
        assert ignored(path, rules), path
    for path in (".env", "gateway/__pycache__/cli.cpython-311.pyc", "build/lib/gateway/app.py"):
        assert ignored(path, rules), path
    for path in ("pyproject.toml", "gateway/cli.py", "gateway/templates/login.html"):
        assert not ignored(path, rules), path


# -- the wheel ------------------------------------------------------------------------


def _build_backend_installed() -> bool:
    """The project venv can build without fetching anything (no build isolation)."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for text in requires:
        requirement = Requirement(text)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(version, prereleases=True):
            return False
    return True


def _pip(*args: str, cwd: Path | None = None) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"pip {' '.join(args)}\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gateway wheel, built from the files the image's build stage copies; once a run,
    by the first worker that needs it (the others wait for it and take the same file)."""
    base = run_dir(tmp_path_factory) / "image"
    with locked(run_dir(tmp_path_factory) / "image.lock"):
        if not list((base / "wheels").glob("gateway-*.whl")):
            source = build_context(build_stage(), base / "context")
            # with the build backend at hand, build offline; else pip fetches it (PyPI)
            isolation = ["--no-build-isolation"] if _build_backend_installed() else []
            wheels = str(base / "wheels")
            _pip("wheel", "--no-deps", *isolation, "--wheel-dir", wheels, ".", cwd=source)
    (built,) = (base / "wheels").glob("gateway-*.whl")
    return built


def test_wheel_holds_the_package_its_template_and_py_typed(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    assert {"gateway/templates/login.html", "gateway/py.typed"} <= names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gateway").rglob("*.py")}
    assert modules <= names, f"left out of the wheel: {sorted(modules - names)}"
    version = wheel.name.split("-")[1]
    assert {n.split("/")[0] for n in names} == {"gateway", f"gateway-{version}.dist-info"}
    assert re.search(r"^gateway = gateway\.cli:main$", scripts, re.M), scripts


def test_installed_gateway_accepts_the_shipped_config(wheel: Path, tmp_path: Path) -> None:
    """`gateway check-config` from the wheel installed in a fresh venv, run outside the
    checkout: the package, its template and its entry point are the installed ones."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    python = venv / "bin" / "python"
    _pip("--python", str(python), "install", "--no-deps", "--no-index", str(wheel))
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    )
    # The dependencies come from the project venv, added as a plain path: the .pth files
    # there (the editable install of this checkout among them) are not processed.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [venv / "bin" / "gateway", "check-config", "--config", ROOT / "config.yaml"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        # PYTHONVERBOSE: the interpreter says where it loads every module from
        env={"PATH": os.environ["PATH"], "JWT_SECRET": SECRET, "PYTHONVERBOSE": "1"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert ": OK:" in result.stdout, result.stdout
    loaded = set(re.findall(r"(/[^\s']*/gateway/[\w/.-]+\.py)c?\b", result.stderr))
    assert str(site / "gateway" / "cli.py") in loaded, sorted(loaded)
    strays = [path for path in loaded if not path.startswith(str(site / "gateway"))]
    assert not strays, f"modules loaded from outside the installed wheel: {strays}"
