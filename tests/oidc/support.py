"""A real, certified OpenID Provider for the tests, and a browser that walks its flows over HTTP.

The provider is panva's `oidc-provider` from npm (tests/oidc/package.json, locked by
package-lock.json), run by tests/oidc/provider.js on a free loopback port with the issuer
`http://127.0.0.1:<port>`. It is installed once into a cache folder,
`$GATEWAY_OIDC_CACHE`, else `$XDG_CACHE_HOME/gateway-oidc`, else `~/.cache/gateway-oidc`,
in a subfolder named after the hash of package.json and package-lock.json, and reused while
they do not change (a `.ready` file inside says the install finished). Tests skip only when
node or npm is missing; any install error fails them with npm's output.

`Browser` is what a browser does that the flows need: a cookie jar shared by every port of
127.0.0.1 (as browsers share cookies between ports of one host), redirects followed one
hop at a time and recorded, and forms submitted as they are on the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import pytest
from yarl import URL

from tests.helpers import cache_dir, locked

HERE = Path(__file__).resolve().parent
INSTALL_TIMEOUT = 300  # seconds, first run only (about 5 s with a warm npm cache)
START_TIMEOUT = 20  # seconds for provider.js to answer discovery
CLIENT_ID = "gateway"
CLIENT_SECRET = "test-client-secret-0123456789abcdef"  # the provider's copy; never in a config
SECRET_ENV = "GATEWAY_TEST_OIDC_SECRET"


@dataclass(frozen=True)
class Account:
    login: str  # what is typed into the provider's sign-in form
    sub: str
    email: str
    name: str
    groups: tuple[str, ...]

    def claims(self) -> dict[str, Any]:
        return {
            "login": self.login,
            "sub": self.sub,
            "email": self.email,
            "email_verified": True,
            "name": self.name,
            "groups": list(self.groups),
        }


ALICE = Account("alice", "0b7c-alice", "alice@example.com", "Alice Liddell", ("staff", "admin"))
BOB = Account("bob", "3e1f-bob", "bob@other.org", "Bob Builder", ())
CAROL = Account("carol", "9d2a-carol", "carol@example.com", "Carol", ("interns",))
# whose `sub` at the provider is the name of the tests' password user alice
MALLORY = Account("mallory", "alice", "mallory@other.org", "Mallory", ("staff",))
ACCOUNTS = (ALICE, BOB, CAROL, MALLORY)


# -- the install ------------------------------------------------------------------------


def cache_root() -> Path:
    return cache_dir("GATEWAY_OIDC_CACHE", "gateway-oidc")


def install() -> Path:
    """oidc-provider installed (`npm ci`) into the cache folder; its node_modules folder."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the OpenID Provider (Debian: nodejs npm)")
    manifest = [HERE / "package.json", HERE / "package-lock.json"]
    digest = hashlib.sha256(b"\0".join(p.read_bytes() for p in manifest)).hexdigest()[:12]
    target = cache_root() / f"oidc-provider-{digest}"
    ready = target / ".ready"
    installed = target / "node_modules" / "oidc-provider" / "package.json"
    if ready.exists() and installed.exists():
        return target / "node_modules"
    with locked(target.with_name(target.name + ".lock")):
        if ready.exists() and installed.exists():
            return target / "node_modules"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for path in manifest:
            shutil.copy(path, target / path.name)
        log = target.with_name(target.name + ".install.log")
        started = time.monotonic()
        with log.open("wb") as sink:
            try:
                done = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    cwd=target,
                    timeout=INSTALL_TIMEOUT,
                    env={
                        **os.environ,
                        "npm_config_cache": str(cache_root() / "npm-cache"),
                        "npm_config_update_notifier": "false",
                    },
                    check=False,
                )
                failure = None if done.returncode == 0 else f"exit {done.returncode}"
            except subprocess.TimeoutExpired:
                failure = f"not done within {INSTALL_TIMEOUT}s"
        if failure is not None:
            shutil.rmtree(target, ignore_errors=True)
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"installing oidc-provider failed ({failure}); {log}:\n{tail}")
        ready.write_text(f"npm ci in {time.monotonic() - started:.1f}s\n")
    return target / "node_modules"


# -- the provider process ---------------------------------------------------------------


def _http(method: str, url: str, body: bytes | None = None, timeout: float = 10) -> Any:
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 - loopback
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{method} {url}: {error.code} {error.read()[:500]!r}") from error


async def _ahttp(method: str, url: str, body: bytes | None = None) -> Any:
    """`_http` in a worker thread: the test's event loop keeps serving meanwhile (the
    provider may be calling an app of the test's, a back-channel logout URI)."""
    return await asyncio.to_thread(_http, method, url, body)


@dataclass
class OpenIDProvider:
    """provider.js on 127.0.0.1:`port`; `start()` waits for discovery, `stop()` ends it.
    What the tests ask of it while it runs is async (the control endpoints)."""

    directory: Path
    port: int
    settings: dict[str, Any] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "provider.log"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> OpenIDProvider:
        modules = install()
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in ("provider.js", "package.json"):
            shutil.copy(HERE / name, self.directory / name)
        link = self.directory / "node_modules"
        if not link.exists():
            link.symlink_to(modules, target_is_directory=True)
        settings = {
            "port": self.port,
            "accounts": [account.claims() for account in ACCOUNTS],
            "clients": [],
            **self.settings,
        }
        (self.directory / "settings.json").write_text(json.dumps(settings, indent=2))
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [
                    "node",
                    str(self.directory / "provider.js"),
                    str(self.directory / "settings.json"),
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"provider.js exited {self.proc.returncode}:\n{self.output()}")
            try:
                discovery = _http("GET", self.issuer + "/.well-known/openid-configuration", None, 1)
                assert discovery["issuer"] == self.issuer
                return self
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"provider.js did not answer within {START_TIMEOUT}s:\n{self.output()}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # -- what the tests ask of it --------------------------------------------------------

    async def discovery(self) -> dict[str, Any]:
        found: dict[str, Any] = await _ahttp(
            "GET", self.issuer + "/.well-known/openid-configuration"
        )
        return found

    async def register(
        self,
        gateway_urls: list[str],
        provider_id: str = "corp",
        *,
        login_path: str = "/login",
        backchannel: str | None = None,
        session_required: bool = True,
        auth_method: str = "client_secret_basic",
        client_id: str = CLIENT_ID,
    ) -> dict[str, Any]:
        """Register (or replace) the gateway as a client: a redirect URI and a post-logout
        URI per gateway URL, the back-channel logout URI of `backchannel` (a gateway URL;
        default: the first), exactly as docs/sso.md tells an administrator to."""
        first = backchannel or gateway_urls[0]
        metadata: dict[str, Any] = {
            "client_id": client_id,
            "client_name": "the gateway",
            "redirect_uris": [f"{u}{login_path}/{provider_id}/callback" for u in gateway_urls],
            "post_logout_redirect_uris": [f"{u}{login_path}" for u in gateway_urls],
            "backchannel_logout_uri": f"{first}{login_path}/{provider_id}/backchannel-logout",
            "backchannel_logout_session_required": session_required,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": auth_method,
        }
        if auth_method != "none":
            metadata["client_secret"] = CLIENT_SECRET
        return await self.register_client(metadata)

    async def register_client(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """Register (or replace) a client with exactly this metadata."""
        answer: dict[str, Any] = await _ahttp(
            "PUT", self.issuer + "/_test/clients", json.dumps(metadata).encode()
        )
        return answer

    async def disable(self, login: str) -> dict[str, Any]:
        answer: dict[str, Any] = await _ahttp("POST", f"{self.issuer}/_test/disable?user={login}")
        return answer

    async def enable(self, login: str) -> None:
        await _ahttp("POST", f"{self.issuer}/_test/enable?user={login}")

    async def change_claims(self, login: str, **claims: Any) -> None:
        """From now on the provider says these claims of `login` (groups, email, name)."""
        await _ahttp(
            "POST", f"{self.issuer}/_test/claims?user={login}", json.dumps(claims).encode()
        )

    async def end_sessions(self, login: str) -> dict[str, Any]:
        """The provider ends `login`'s sessions and sends the back-channel logout tokens."""
        answer: dict[str, Any] = await _ahttp("POST", f"{self.issuer}/_test/logout?user={login}")
        return answer

    async def sessions(self, login: str) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = await _ahttp(
            "GET", f"{self.issuer}/_test/sessions?user={login}"
        )
        return answer

    async def drop_reused(self, path: str = "/token") -> None:
        """The next request to `path` on a connection that already served one is dropped
        unanswered: a keep-alive connection the provider closed as the client reused it."""
        await _ahttp("POST", f"{self.issuer}/_test/drop-reused?path={path}")

    async def delay(self, ms: int) -> None:
        await _ahttp("POST", f"{self.issuer}/_test/delay?ms={ms}")

    async def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await _ahttp("GET", self.issuer + "/_test/events")
        return [e for e in found if name is None or e["event"] == name]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running_provider(
    directory: Path, port: int | None = None, **settings: Any
) -> Iterator[OpenIDProvider]:
    """provider.js started on `port` (default: a free one, tried again if another process
    took it meanwhile), stopped at the end."""
    for attempt in range(3):
        provider = OpenIDProvider(directory / f"idp-{attempt}", port or free_port(), settings)
        try:
            provider.start()
            break
        except AssertionError:
            provider.stop()
            if port is not None or attempt == 2 or "EADDRINUSE" not in provider.output():
                raise
    try:
        yield provider
    finally:
        provider.stop()


# -- a browser over HTTP ----------------------------------------------------------------


@dataclass
class Form:
    id: str | None
    action: str
    method: str
    fields: dict[str, str]


class _Forms(HTMLParser):
    """Every <form> of a page with its action, method and the named inputs and buttons in it."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._open: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._open = Form(a.get("id"), a.get("action", ""), a.get("method", "get"), {})
            self.forms.append(self._open)
        elif (
            tag == "input"
            and self._open is not None
            and a.get("name")
            # a submit button's own name and value are sent only when it is the one clicked
            and a.get("type", "text") not in ("submit", "button", "image")
        ):
            self._open.fields.setdefault(a["name"], a.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def forms(page: str) -> list[Form]:
    parser = _Forms()
    parser.feed(page)
    return parser.forms


@dataclass
class Hop:
    method: str
    url: str
    status: int
    location: str | None
    set_cookies: list[str]


@dataclass
class Page:
    """Where a walk ended: the last answer, and every hop on the way."""

    url: str
    status: int
    headers: dict[str, str]
    text: str
    hops: list[Hop]

    def json(self) -> Any:
        return json.loads(self.text)

    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query)

    def form(self, form_id: str | None = None) -> Form:
        found = [f for f in forms(self.text) if form_id is None or f.id == form_id]
        assert found, f"no form {form_id or ''} on {self.url} ({self.status}):\n{self.text[:2000]}"
        return found[0]

    def trail(self) -> str:
        return "\n".join(f"{h.method} {h.url} -> {h.status} {h.location or ''}" for h in self.hops)


class Browser:
    """A cookie jar and manual redirects: what the flows need of a browser, over HTTP."""

    MAX_HOPS = 20

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.http = session

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls) -> Any:
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address host, like a browser
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            yield cls(session)

    def cookies(self, port: int | None = None) -> dict[str, str]:
        """The cookies this browser would send to 127.0.0.1 (any port: browsers share them)."""
        url = URL(f"http://127.0.0.1:{port or 80}/")
        return {
            name: morsel.value for name, morsel in self.http.cookie_jar.filter_cookies(url).items()
        }

    async def go(
        self,
        url: str,
        method: str = "GET",
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        follow: bool = True,
    ) -> Page:
        """One request, then its redirects, as a browser follows them (303 and 302 -> GET)."""
        hops: list[Hop] = []
        for _ in range(self.MAX_HOPS):
            sent = {"Accept": "text/html", **(headers or {})}
            if method == "POST":
                origin = urlsplit(url)
                sent.setdefault("Origin", f"{origin.scheme}://{origin.netloc}")
            async with self.http.request(
                method, url, data=data, headers=sent, allow_redirects=False
            ) as response:
                text = await response.text(errors="replace")
                location = response.headers.get("Location")
                hops.append(
                    Hop(
                        method,
                        url,
                        response.status,
                        location,
                        response.headers.getall("Set-Cookie", []),
                    )
                )
                if not follow or location is None or response.status not in (301, 302, 303, 307):
                    return Page(url, response.status, dict(response.headers), text, hops)
            url = urljoin(url, location)
            if response.status in (301, 302, 303):
                method, data = "GET", None
            headers = None
        raise AssertionError(f"more than {self.MAX_HOPS} redirects:\n" + "\n".join(map(str, hops)))

    async def submit(self, page: Page, form_id: str | None = None, **values: str) -> Page:
        """Submit a form of `page` with its own fields and `values` typed in."""
        form = page.form(form_id)
        target = urljoin(page.url, form.action or page.url)
        walked = await self.go(target, form.method.upper(), {**form.fields, **values})
        walked.hops = page.hops + walked.hops
        return walked


async def sign_in_at_provider(browser: Browser, start: str, login: str) -> Page:
    """From `start` (a URL that leads to the provider's sign-in page), sign `login` in there
    and follow everything after it; the page where it all ended."""
    page = await browser.go(start)
    assert page.form("login"), page.trail()
    return await browser.submit(page, "login", username=login)
