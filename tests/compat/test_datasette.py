"""Datasette (PyPI) behind the gateway: the absolute URLs it builds from `Host` (its JSON
`next_url`, its `Link: rel="next"` header, the HTML "Next page" link) point at the
gateway's address, the one the browser used, never at the app's own."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.compat.conftest import App, dump, path_of, python_app, sign_in, wait
from tests.conftest import GatewayProcess

pytestmark = pytest.mark.compat

VERSION = "0.65.5"
ROWS = 250  # Datasette's default page size is 100: three pages


def _database(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("create table items (id integer primary key, name text)")
        db.executemany(
            "insert into items (id, name) values (?, ?)",
            [(i, f"item {i}") for i in range(1, ROWS + 1)],
        )
    return path


def _fetch_json(driver: webdriver.Chrome, url: str) -> tuple[int, str | None, dict[str, object]]:
    """What the page's own script gets for `url`: status, Link header, JSON body."""
    status, link, text = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {credentials: 'same-origin'})
          .then(async r => done([r.status, r.headers.get('link'), await r.text()]))
          .catch(e => done([0, null, String(e)]));
        """,
        url,
    )
    assert status == 200, f"{url}: {status} {text[:500]}"
    return status, link, json.loads(text)


def _flow(driver: webdriver.Chrome, gateway: GatewayProcess) -> None:
    where = urlsplit(gateway.url).netloc  # 127.0.0.1:<gateway port>

    # a user opens the table, signs in on the gateway, and gets Datasette's page
    sign_in(driver, gateway, "/data/items")
    wait(driver).until(lambda d: path_of(d) == "/data/items", "back on /data/items")
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.rows-and-columns"))
    assert "item 1" in driver.find_element(By.CSS_SELECTOR, "table.rows-and-columns").text

    # the JSON API: next_url and the Link header name the gateway
    _, link, page = _fetch_json(driver, "/data/items.json")
    next_url = str(page["next_url"])
    assert urlsplit(next_url).netloc == where, f"next_url {next_url!r} is not on {where}"
    assert next_url.startswith(gateway.url + "/data/items.json?"), next_url
    assert link == f'<{next_url}>; rel="next"', f"Link: {link!r} (next_url {next_url!r})"

    # an API client following the pagination stays behind the gateway, to the last page
    seen, url = len(page["rows"]), next_url  # type: ignore[arg-type]
    while url:
        assert urlsplit(url).netloc == where, f"pagination left the gateway: {url!r}"
        _, link, page = _fetch_json(driver, url)
        seen += len(page["rows"])  # type: ignore[arg-type]
        url = page["next_url"]  # type: ignore[assignment]
        assert (link is None) == (url is None), (link, url)
    assert seen == ROWS

    # the HTML page's "Next page" link: a click keeps the user on the gateway
    driver.find_element(By.LINK_TEXT, "Next page").click()
    wait(driver).until(lambda d: "_next=" in d.current_url, "the next page")
    assert urlsplit(driver.current_url).netloc == where, driver.current_url
    wait(driver).until(lambda d: "item 101" in d.find_element(By.TAG_NAME, "body").text)


def _datasette(run_app: Callable[..., App], tmp_path: Path) -> App:
    bin_dir = python_app("datasette", VERSION)
    database = _database(tmp_path / "data.db")
    return run_app(
        "datasette",
        [str(bin_dir / "datasette"), "serve", str(database), "--host", "127.0.0.1", "-p", "{port}"],
        cwd=tmp_path,
        ready_path="/-/versions.json",
    )


def test_datasette_links_point_at_the_gateway(
    browser: webdriver.Chrome,
    run_app: Callable[..., App],
    gateway_for: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    app = _datasette(run_app, tmp_path)
    gateway = gateway_for(app.url)
    try:
        _flow(browser, gateway)
    except BaseException:
        print(dump(gateway, app, browser))
        raise


def test_datasette_control_without_preserve_host(
    browser: webdriver.Chrome,
    run_app: Callable[..., App],
    gateway_for: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    """The check above can fail: with `preserve_host: false` (the upstream's own host:port
    goes upstream, issue 10's first finding) Datasette's links name the app, not the gateway."""
    app = _datasette(run_app, tmp_path)
    gateway = gateway_for(app.url, extra="preserve_host: false\n")
    try:
        sign_in(browser, gateway, "/data/items")
        _, link, page = _fetch_json(browser, "/data/items.json")
        assert urlsplit(str(page["next_url"])).netloc == f"127.0.0.1:{app.port}", page["next_url"]
        assert link is not None and f"127.0.0.1:{app.port}" in link, link
    except BaseException:
        print(dump(gateway, app, browser))
        raise
