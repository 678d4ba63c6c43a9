"""A Node.js app from npm behind the gateway: Express 5 with express-session (its own
session cookie) and a live board over `ws`, a WebSocket whose handshake the app checks
itself, as Express apps commonly do: its session cookie must come along and its `Origin`
must match its `Host` (cross-site WebSocket hijacking). The page shows what the app saw;
after logout the gateway closes the live WebSocket and the page says so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.compat.conftest import App, dump, log_out, node_app, path_of, sign_in, wait
from tests.conftest import GatewayProcess, log_lines

pytestmark = pytest.mark.compat

PACKAGES = ["express@5.3.0", "express-session@1.19.0", "ws@8.23.0"]
CLOSE_WITHIN = 15  # seconds, SPEC §7.1

SERVER = r"""
const http = require('http');
const express = require('express');
const session = require('express-session');
const { WebSocketServer } = require('ws');

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
const app = express();
app.use(express.urlencoded({ extended: false }));
const sessions = session({ secret: 'compat', resave: false, saveUninitialized: true });
app.use(sessions);

app.get('/', (req, res) => {
  req.session.visits = (req.session.visits || 0) + 1;
  const notes = (req.session.notes || []).map((n) => `<li>${esc(n)}</li>`).join('');
  res.type('html').send(`<!doctype html><title>Board</title>
<p>visits: <span id="visits">${req.session.visits}</span></p>
<p>host: <span id="host">${esc(req.get('host'))}</span></p>
<p>user: <span id="user">${esc(req.get('x-user-id') || '')}</span></p>
<ul id="notes">${notes}</ul>
<form method="post" action="/notes">
  <input id="note" name="note"><button id="add">Add</button>
</form>
<p>live: <span id="state">connecting</span> <span id="tick"></span> <span id="echo"></span></p>
<script>
  const ws = new WebSocket('ws://' + location.host + '/live');
  const show = (id, text) => { document.getElementById(id).textContent = text; };
  ws.onopen = () => { show('state', 'open'); ws.send('ping'); };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.echo) show('echo', m.echo); else show('tick', m.tick);
  };
  ws.onclose = (e) => show('state', 'closed ' + e.code);
</script>`);
});

app.post('/notes', (req, res) => {
  req.session.notes = [...(req.session.notes || []), req.body.note];
  res.redirect(303, '/');
});

const server = http.createServer(app);
const wss = new WebSocketServer({ noServer: true });
const refuse = (socket, why) => {
  const head = 'HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close';
  socket.end(`${head}\r\n\r\n${why}`);
};
server.on('upgrade', (req, socket, head) => {
  if (req.url !== '/live') return refuse(socket, 'no such socket');
  if (req.headers.origin !== 'http://' + req.headers.host) {
    console.log('refused websocket: Origin', req.headers.origin, 'Host', req.headers.host);
    return refuse(socket, 'cross-origin');
  }
  sessions(req, {}, () => {
    if (!req.session || !req.session.visits) return refuse(socket, 'no session');
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
});
wss.on('connection', (ws, req) => {
  let n = 0;
  const timer = setInterval(() => ws.send(JSON.stringify({ tick: ++n })), 250);
  ws.on('message', (m) => {
    ws.send(JSON.stringify({ echo: `pong:${m}:visits=${req.session.visits}` }));
  });
  ws.on('close', () => clearInterval(timer));
});
server.listen(Number(process.env.PORT), '127.0.0.1', () => console.log('listening'));
"""


def _text(driver: webdriver.Chrome, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def _flow(driver: webdriver.Chrome, gateway: GatewayProcess) -> None:
    host = gateway.url.removeprefix("http://")
    sign_in(driver, gateway, "/")
    wait(driver).until(lambda d: d.find_elements(By.ID, "visits"), "the board")
    assert path_of(driver) == "/"
    assert _text(driver, "host") == host  # the browser's Host reached the app
    assert _text(driver, "user") == "alice"  # and the gateway's identity headers
    assert _text(driver, "visits") == "1"
    assert driver.get_cookie("connect.sid"), "express-session's cookie did not come through"

    # the live WebSocket: accepted by the app (session cookie, Origin == Host), both ways
    wait(driver).until(lambda d: _text(d, "state") == "open", "the WebSocket open")
    wait(driver).until(lambda d: _text(d, "echo") == "pong:ping:visits=1", "the echo")
    wait(driver).until(lambda d: int(_text(d, "tick") or 0) >= 2, "ticks")

    # a form POST, the app's redirect, and its session kept across requests
    driver.find_element(By.ID, "note").send_keys("hello from behind the gateway")
    driver.find_element(By.ID, "add").click()
    wait(driver).until(lambda d: _text(d, "visits") == "2", "the board after the POST")
    assert path_of(driver) == "/"
    assert _text(driver, "notes") == "hello from behind the gateway"
    wait(driver).until(lambda d: _text(d, "echo") == "pong:ping:visits=2", "the echo")

    # sign out from the page: the gateway closes the live WebSocket, and the page says so
    log_out(driver)
    wait(driver, CLOSE_WITHIN).until(
        lambda d: _text(d, "state").startswith("closed"), "the WebSocket closed after logout"
    )
    driver.refresh()
    wait(driver).until(lambda d: path_of(d) == "/login", "the login page after logout")


def _express(run_app: Callable[..., App], tmp_path: Path) -> App:
    modules = node_app("express-ws", PACKAGES)
    (tmp_path / "server.js").write_text(SERVER)
    return run_app(
        "express",
        ["node", str(tmp_path / "server.js")],
        cwd=tmp_path,
        env={"PORT": "{port}", "NODE_PATH": str(modules)},
    )


def test_express_session_and_websocket(
    browser: webdriver.Chrome,
    run_app: Callable[..., App],
    gateway_for: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    app = _express(run_app, tmp_path)
    gateway = gateway_for(app.url)
    try:
        _flow(browser, gateway)
    except BaseException:
        print(dump(gateway, app, browser))
        raise


def test_express_control_without_preserve_host(
    browser: webdriver.Chrome,
    run_app: Callable[..., App],
    gateway_for: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    """The check above can fail: with `preserve_host: false` the app sees its own
    host:port as `Host`, refuses the WebSocket as cross-origin with `403`, and that `403`
    is what the gateway answers too (SPEC §7.1: never a `502`)."""
    app = _express(run_app, tmp_path)
    gateway = gateway_for(app.url, extra="preserve_host: false\n")
    try:
        sign_in(browser, gateway, "/")
        wait(browser).until(lambda d: _text(d, "state").startswith("closed"), "a refused WS")
        assert _text(browser, "echo") == ""
        assert _text(browser, "host") == f"127.0.0.1:{app.port}"
        wait(browser).until(lambda _: "refused websocket" in app.output(), "the app's refusal")

        def answered(_: object) -> list[dict[str, Any]]:
            return [
                line
                for line in log_lines(gateway.log)
                if line.get("logger") == "gateway.access" and line.get("path") == "/live"
            ]

        live = wait(browser).until(answered, "the handshake in the access log")
        assert [(x["status"], x["upstream_status"]) for x in live] == [(403, 403)], live
    except BaseException:
        print(dump(gateway, app, browser))
        raise
