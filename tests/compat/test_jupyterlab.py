"""JupyterLab (PyPI) behind the gateway, with its own auth off and nothing set for the
proxy: a user signs in, creates a notebook, runs a cell over the kernel WebSocket, saves
it, signs out, and the gateway closes the kernel WebSocket within 15 s.

JupyterLab compares `Origin` with `Host` on its API calls and on the kernel WebSocket, so
this works only when the gateway forwards the client's `Host` (`preserve_host`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.compat.conftest import App, dump, log_out, python_app, sign_in, sockets, wait
from tests.conftest import GatewayProcess

pytestmark = pytest.mark.compat

VERSION = "4.6.6"
CLOSE_WITHIN_MS = 15_000  # SPEC §7.1: an open WebSocket closes within 15 s of logout


def _is_kernel(socket: dict[str, Any]) -> bool:
    return "/api/kernels/" in str(socket["url"])


def _kernel_sockets(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    return [s for s in sockets(driver) if _is_kernel(s)]


def _flow(driver: webdriver.Chrome, gateway: GatewayProcess, notebooks: Path) -> None:
    where = urlsplit(gateway.url).netloc

    # sign in on the gateway, land in JupyterLab, open a new Python notebook from the launcher
    sign_in(driver, gateway, "/lab")
    card = '.jp-LauncherCard[data-category="Notebook"]'
    wait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, card), "the launcher")
    driver.find_element(By.CSS_SELECTOR, card).click()

    # the notebook opens, and its kernel WebSocket connects, to the gateway's address
    wait(driver, 60).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell .cm-content"),
        "a notebook with a cell",
    )
    wait(driver, 60).until(
        lambda d: any(s["opened"] and not s["closed"] for s in _kernel_sockets(d)),
        "the kernel WebSocket open",
    )
    kernel_ws = [s for s in _kernel_sockets(driver) if s["opened"] and not s["closed"]]
    assert all(urlsplit(str(s["url"])).netloc == where for s in kernel_ws), kernel_ws

    # type a cell and run it: the code goes to the kernel and 42 comes back, both over the WS
    editor = driver.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell .cm-content")
    editor.click()
    editor.send_keys("print(6*7)")
    ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    wait(driver, 30).until(
        lambda d: any(
            e.text.strip() == "42"
            for e in d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-OutputArea-output")
        ),
        "the cell's output 42",
    )

    # save (Ctrl+S); on a first save JupyterLab asks for a name: "answer", Rename and Save.
    # The notebook is then on disk, with the cell and its output
    ActionChains(driver).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
    name = wait(driver).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Dialog input"), "the rename dialog"
    )[0]
    name.send_keys(Keys.CONTROL, "a")
    name.send_keys("answer.ipynb")
    driver.find_element(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept").click()
    saved = notebooks / "answer.ipynb"

    def on_disk(_: object) -> bool:
        try:
            cells = json.loads(saved.read_text())["cells"]
        except (OSError, ValueError, KeyError):
            return False
        return any(
            "print(6*7)" in "".join(c["source"])
            and any("42" in "".join(o.get("text", "")) for o in c.get("outputs", []))
            for c in cells
        )

    wait(driver, 20).until(on_disk, f"{saved} saved with the cell and its output")

    # sign out from the page (a same-origin POST to /logout): the page stays open, and the
    # gateway closes the kernel WebSocket it had let through; reconnecting is refused
    # (window.__sockets only grows: an index names one socket)
    open_before = [
        i
        for i, s in enumerate(sockets(driver))
        if _is_kernel(s) and s["opened"] and not s["closed"]
    ]
    assert open_before
    logged_out_at = driver.execute_script("return Date.now()")
    log_out(driver)

    def closed_at(d: webdriver.Chrome) -> list[int] | Literal[False]:
        now = sockets(d)
        times = [now[i]["closed"] for i in open_before]
        return False if None in times else times

    times = wait(driver, CLOSE_WITHIN_MS / 1000 + 5).until(closed_at, "the kernel WS closed")
    after = max(times) - logged_out_at
    assert after <= CLOSE_WITHIN_MS, f"the kernel WebSocket closed {after} ms after logout"
    print(f"kernel WebSocket closed {after} ms after logout")

    # JupyterLab reconnects by itself: the gateway refuses that handshake, no socket opens
    def refused_retry(d: webdriver.Chrome) -> list[dict[str, Any]]:
        later = [s for s in _kernel_sockets(d) if s["created"] > logged_out_at]
        return [s for s in later if s["closed"]]

    retries = wait(driver, 30).until(refused_retry, "JupyterLab's reconnect attempt")
    assert all(s["opened"] is None for s in retries), f"reopened after logout: {retries}"


def test_jupyterlab_notebook_kernel_and_logout(
    browser: webdriver.Chrome,
    run_app: Callable[..., App],
    gateway_for: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    bin_dir = python_app("jupyterlab", VERSION)
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    state = tmp_path / "jupyter"
    env = {  # keep the user's own Jupyter config and state out of it
        "JUPYTER_CONFIG_DIR": str(state / "config"),
        "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(state / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(state / "workspaces"),
        "IPYTHONDIR": str(state / "ipython"),
    }
    app = run_app(
        "jupyterlab",
        [
            str(bin_dir / "jupyter"),
            "lab",
            "--no-browser",
            "--IdentityProvider.token=",  # auth off (ServerApp.token, deprecated, did it)
            "--ip=127.0.0.1",
            "--port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={notebooks}",
            *(["--allow-root"] if os.geteuid() == 0 else []),  # CI runs as root
        ],
        cwd=notebooks,
        env=env,
        ready_path="/api",
    )
    gateway = gateway_for(app.url)
    try:
        _flow(browser, gateway, notebooks)
    except BaseException:
        print(dump(gateway, app, browser))
        raise
