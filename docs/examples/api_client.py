#!/usr/bin/env python3
"""Call an app behind the gateway from a script: docs/api-clients.md.

Signs in with JSON, keeps the two session cookies in a cookie jar (so the gateway refreshes
the access token by itself), and signs in again, once, when a call answers 401. With
--bearer it sends the access token as `Authorization: Bearer` instead, which is never
refreshed: every `access_ttl` it is a 401 and a new sign-in.

    export GATEWAY_USERNAME=alice GATEWAY_PASSWORD=...
    python3 api_client.py https://app.example.com /api/whoami
    python3 api_client.py https://app.example.com /api/whoami --repeat 10 --interval 60

Prints each answer's body on stdout, one line per call, and what it does on stderr. Exit
status: 0 when every call answered 2xx, 1 when one did not, 2 when sign-in was refused.
Standard library only (Python 3.8+).
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import sys
import time
import urllib.error
import urllib.request

ACCESS_COOKIE = "access_token"  # cookies.access in the gateway's config


class SignInRefused(Exception):
    pass


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The sign-in's 303 is the answer, not a page to fetch: it arrives as an HTTPError."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


class GatewayClient:
    def __init__(self, base: str, username: str, password: str, bearer: bool = False) -> None:
        self.base = base.rstrip("/")
        self.username, self.password = username, password
        self.bearer = bearer
        self.token: str | None = None  # the access token, in --bearer mode
        self.jar = http.cookiejar.CookieJar()  # keeps Set-Cookie from every answer
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirects
        )
        self.signed_in = False

    def sign_in(self) -> None:
        """POST /login with JSON: 303 and two Set-Cookie on success, kept in the jar."""
        body = json.dumps({"username": self.username, "password": self.password}).encode()
        status, headers, answer = self._open(
            "POST", "/login", body, {"Content-Type": "application/json"}
        )
        if status == 429:
            wait = headers.get("Retry-After", "?")
            raise SignInRefused(f"too many failed sign-ins: try again in {wait} s")
        if status != 303:  # 401: wrong username or password; 503: try again later
            raise SignInRefused(f"sign-in answered {status}: {answer.decode(errors='replace')}")
        if self.bearer:
            # the access cookie's value is the token; without the cookies, nothing refreshes it
            self.token = next(c.value for c in self.jar if c.name == ACCESS_COOKIE)
            self.jar.clear()
        self.signed_in = True
        print(f"signed in as {self.username}", file=sys.stderr)

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """One call; on 401, sign in again and repeat it once.

        Repeating is safe for any method: a 401 comes from the gateway, so the app never saw
        the first attempt.
        """
        if not self.signed_in:
            self.sign_in()
        status, _, answer = self._open(method, path, body, headers or {})
        if status == 401:  # expired (bearer), logged out, revoked, or signed out for too long
            print(f"{method} {path}: 401, signing in again", file=sys.stderr)
            self.sign_in()
            status, _, answer = self._open(method, path, body, headers or {})
        return status, answer

    def _open(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        # Accept: JSON, so an `auto` route answers 401 rather than a redirect to the login page
        headers = {"Accept": "application/json", **headers}
        if self.token is not None and path != "/login":
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(  # noqa: S310 - main() allows http(s) only
            self.base + path, data=body, method=method, headers=headers
        )
        try:
            with self.opener.open(request, timeout=30) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:  # every status but 2xx, the 303 included
            with error:
                return error.code, dict(error.headers), error.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the site, e.g. https://app.example.com")
    parser.add_argument("paths", nargs="+", help="paths to GET, e.g. /api/whoami")
    parser.add_argument("--bearer", action="store_true", help="send Authorization: Bearer")
    parser.add_argument("--repeat", type=int, default=1, help="call the paths this many times")
    parser.add_argument("--interval", type=float, default=0, help="seconds between rounds")
    args = parser.parse_args()
    if not args.base.startswith(("https://", "http://")):
        parser.error("the site is an http:// or https:// URL")
    username, password = os.environ.get("GATEWAY_USERNAME"), os.environ.get("GATEWAY_PASSWORD")
    if not username or not password:
        parser.error("set GATEWAY_USERNAME and GATEWAY_PASSWORD")
    client = GatewayClient(args.base, username, password, args.bearer)
    failed = False
    try:
        for round_ in range(args.repeat):
            if round_:
                time.sleep(args.interval)
            for path in args.paths:
                status, answer = client.call("GET", path)
                print(f"GET {path}: {status}", file=sys.stderr)
                print(answer.decode(errors="replace").strip(), flush=True)
                failed = failed or not 200 <= status < 300
    except SignInRefused as refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    except OSError as error:  # not reachable, a timeout, TLS
        print(f"error: {args.base}: {error}", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
