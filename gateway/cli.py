"""Commands. The only module that prints for humans and decides exit codes."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from . import __version__, logs
from .config import Config, load
from .errors import ConfigError
from .oidc.links import listed
from .runtime import Runtime
from .store import StoreUnavailable, StoreUnconfirmed

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _config_path(arg: str | None) -> str:
    return arg or os.environ.get("GATEWAY_CONFIG") or "config.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Reverse-proxy authentication gateway: JWT cookies in front of any web app.",
    )
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = "config file (default: $GATEWAY_CONFIG, else ./config.yaml)"

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=config_help)

    check = sub.add_parser("check-config", help="validate a config file and list every problem")
    check.add_argument("--config", help=config_help)
    check.add_argument(
        "--online",
        action="store_true",
        help="also fetch each OpenID provider's discovery document and keys",
    )

    explain = sub.add_parser("explain", help="show which route matches a request and the decision")
    explain.add_argument("--config", help=config_help)
    explain.add_argument("method", metavar="METHOD")
    explain.add_argument("path", metavar="PATH")
    explain.add_argument("--token", help="an access JWT to decide with (default: anonymous)")
    explain.add_argument(
        "--cookie", action="store_true", help="send --token in the access cookie, not as Bearer"
    )
    explain.add_argument("--host", help="the request's Host (for the cross-site rule)")
    explain.add_argument("--origin", help="the request's Origin (for the cross-site rule)")
    explain.add_argument(
        "--browser", action="store_true", help="a browser navigation (Accept: text/html)"
    )

    sub.add_parser("hash-password", help="read a password on stdin, print an argon2id hash")

    revoke = sub.add_parser("revoke", help="end every session of a user, on every replica")
    revoke.add_argument("--config", help=config_help)
    revoke.add_argument("--user", required=True, help="the user's id (the sub claim)")

    sessions = sub.add_parser("sessions", help="list a user's live sessions")
    sessions.add_argument("--config", help=config_help)
    sessions.add_argument("--user", required=True, help="the user's id (the sub claim)")

    sub.add_parser("schema", help="print the JSON Schema of the config file, for editors")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hash-password":
        return _hash_password()
    if args.command == "schema":
        return _schema()
    path = _config_path(args.config)
    if args.command == "serve":
        return _serve(path)
    if args.command == "check-config":
        return _check(path, online=args.online)
    if args.command in ("revoke", "sessions"):
        return _session_admin(path, args.command, args.user)
    return _explain(path, args)


def _load_or_report(path: str, prefix: str = "", text: str | None = None) -> Config | None:
    try:
        return load(path, text)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{prefix}{problem}", file=sys.stderr)
        return None


def _serve(path: str) -> int:
    from .server import run
    from .supervisor import worker_role

    worker = worker_role()
    text = worker.config_file.read_text(encoding="utf-8") if worker else None
    config = _load_or_report(path, prefix="gateway: invalid config: ", text=text)
    if config is None:
        return EXIT_USAGE

    logs.setup()
    logs.set_level(config.log_level)
    for warning in config.warnings if worker is None else ():  # the supervisor says them
        logging.getLogger("gateway.config").warning(warning)
    try:
        run(config, worker)
    except OSError as exc:
        print(f"gateway: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _check(path: str, online: bool = False) -> int:
    config = _load_or_report(path)
    if config is None:
        return EXIT_INVALID
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    routes = config.routes.routes
    login = config.login
    if login.users is not None:
        sign_in = f"sign-in with {len(login.users.users)} users from {login.users_file}"
    elif login.verify_url is not None:
        sign_in = f"sign-in via {login.verify_url}"
    else:
        sign_in = "no sign-in (tokens come from elsewhere)"
    if login.providers:
        ids = ", ".join(p.id for p in login.providers)
        sign_in = sign_in if login.users_file or login.verify_url else "no password sign-in"
        sign_in += f", OpenID Connect: {ids}"
    door = f"upstream {config.upstream}" if config.upstream else "no upstream"
    if config.forward_auth is not None:
        door += f", forward-auth at {config.forward_auth.path}"
    print(
        f"{path}: OK: {len(routes)} route{'s' * (len(routes) != 1)},"
        f" default {config.routes.default.auth},"
        f" {door}, {config.tokens.keys.algorithm} tokens,"
        f" store {config.store.scheme}://, {sign_in},"
        f" listen {config.listen}, admin {config.admin_listen}"
    )
    if online and login.providers:
        from .oidc.online import check

        results = asyncio.run(check(login.providers))
        for ok, line in results:
            print(line, file=sys.stdout if ok else sys.stderr)
        if not all(ok for ok, _ in results):
            return EXIT_INVALID
    return EXIT_OK


def _explain(path: str, args: argparse.Namespace) -> int:
    from .explain import report
    from .stores import open_store

    config = _load_or_report(path)
    if config is None:
        return EXIT_INVALID
    password = config.store_password.reveal().decode() if config.store_password else None

    async def run() -> list[str]:
        store = open_store(config.store, config.store_timeout, password)
        try:
            return await report(
                config,
                store,
                args.method,
                args.path,
                token=args.token,
                as_cookie=args.cookie,
                host=args.host or "",
                origin=args.origin,
                browser=args.browser,
            )
        finally:
            await store.close()

    print("\n".join(asyncio.run(run())))
    return EXIT_OK


def _hash_password() -> int:
    from .credentials import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("gateway: the passwords differ", file=sys.stderr)
            return EXIT_INVALID
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("gateway: empty password", file=sys.stderr)
        return EXIT_INVALID
    print(hash_password(password))
    return EXIT_OK


def _schema() -> int:
    from .schema import config_schema

    print(json.dumps(config_schema(), indent=2))
    return EXIT_OK


def _session_admin(path: str, command: str, user: str) -> int:
    """Redis: straight to the store. memory://: through the running gateway's admin port."""
    config = _load_or_report(path)
    if config is None:
        return EXIT_INVALID
    try:
        if config.store.scheme == "memory":
            result = _ask_admin(config, command, user)
        else:
            result = asyncio.run(_store_admin(config, command, user))
    except StoreUnconfirmed:
        print(
            f"gateway: the revocation of {user} is written on the primary but not yet"
            " confirmed by a replica (a failover could undo it): run the command again",
            file=sys.stderr,
        )
        return EXIT_INVALID
    except (StoreUnavailable, OSError) as exc:
        print(f"gateway: the store did not answer: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if command == "revoke":
        count = result["revoked_sessions"]
        print(
            f"revoked {user}: {count} session{'s' * (count != 1)} ended;"
            " access tokens issued before now are refused"
        )
        return EXIT_OK
    rows = result["sessions"]
    if not rows:
        print(f"{user}: no live sessions")
    for row in rows:
        print(
            f"{row['family']}  signed in {_when(row['created'])}  last refresh"
            f" {_when(row['last_refresh'])}  from {row['client'] or '-'}"
            f"  {row['user_agent'] or '-'}  via {row.get('provider', 'password')}"
        )
    return EXIT_OK


async def _store_admin(config: Config, command: str, user: str) -> dict[str, Any]:
    runtime = Runtime(config)
    try:
        if command == "revoke":
            return {"revoked_sessions": await runtime.snapshot.sessions.revoke_user(user)}
        return {"sessions": await listed(runtime.store, await runtime.store.sessions(user))}
    finally:
        await runtime.close()


def _ask_admin(config: Config, command: str, user: str) -> dict[str, Any]:
    host = config.admin_listen.host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    base = f"http://{'[' + host + ']' if ':' in host else host}:{config.admin_listen.port}"
    query = urllib.parse.urlencode({"user": user})
    url = f"{base}/sessions/revoke?{query}" if command == "revoke" else f"{base}/sessions?{query}"
    request = urllib.request.Request(  # noqa: S310 - our own admin port
        url,
        method="POST" if command == "revoke" else "GET",
        headers={"Content-Type": "application/json"} if command == "revoke" else {},
        data=b"{}" if command == "revoke" else None,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - our admin port
            body: dict[str, Any] = json.loads(reply.read())
            return body
    except urllib.error.HTTPError as exc:
        raise OSError(f"the gateway's admin port answered {exc.code}") from None
    except urllib.error.URLError as exc:
        raise OSError(
            f"memory:// lives inside the running gateway, and its admin port {base}"
            f" did not answer ({exc.reason})"
        ) from None


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(moment))


if __name__ == "__main__":
    sys.exit(main())
