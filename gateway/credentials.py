"""Checking a username and password: the users file, or the legacy app's verify_url.

Both answer the same three ways: the user's claims, None (wrong credentials,
whatever the reason), or CredentialsUnavailable (the backend could not say;
the login answers 503 and never guesses). An unknown or disabled user costs
the same hash verification as a wrong password, so timing does not tell
which usernames exist.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import argon2
import bcrypt
from yarl import URL

from .errors import ConfigProblem
from .tokens import RESERVED_CLAIMS
from .yamlsource import Problems, Section, compose

_HASHER = argon2.PasswordHasher()  # argon2id, RFC 9106's second recommended parameters
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
# Hash checks take tens of milliseconds of CPU: off the event loop, and at most two
# at a time, so a burst of logins queues instead of stalling every proxied request.
_HASH_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="password-hash")
MAX_FIELD = 1024
# The shared client skips its automatic headers (it forwards requests as they came), so
# the ones a legacy endpoint needs are said here; and it does not decompress.
_VERIFY_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Accept-Encoding": "identity",
}


class CredentialsUnavailable(Exception):
    """The credential backend failed or timed out; not the same as wrong credentials."""


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def _known_hash(value: str) -> bool:
    if value.startswith(_BCRYPT_PREFIXES):
        return len(value) == 60
    try:
        argon2.extract_parameters(value)
    except argon2.exceptions.InvalidHashError:
        return False
    return True


def _matches(password_hash: str, password: str) -> bool:
    if password_hash.startswith(_BCRYPT_PREFIXES):
        try:
            return bcrypt.checkpw(password.encode(), password_hash.encode())
        except ValueError:  # bcrypt refuses passwords over 72 bytes
            return False
    try:
        return _HASHER.verify(password_hash, password)
    except argon2.exceptions.VerificationError:
        return False
    except argon2.exceptions.InvalidHashError:
        return False


@functools.cache
def _dummy_hash() -> str:
    """An argon2id hash with the parameters every `gateway hash-password` hash has: checked
    for unknown and disabled users, so they take as long as a wrong password."""
    return hash_password("unused: only timing matters")


@dataclass(frozen=True, slots=True)
class User:
    password_hash: str = field(repr=False)
    claims: Mapping[str, Any]
    disabled: bool


@dataclass(frozen=True, slots=True)
class UsersFile:
    path: Path
    users: Mapping[str, User]

    async def check(
        self, username: str, password: str, client: aiohttp.ClientSession
    ) -> dict[str, Any] | None:
        user = self.users.get(username)
        usable = user is not None and not user.disabled
        candidate = user.password_hash if user is not None and usable else _dummy_hash()
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(_HASH_POOL, _matches, candidate, password)
        if not ok or user is None or not usable:
            return None
        return {"sub": username, **user.claims}

    def current_claims(self, subject: str) -> dict[str, Any] | None:
        """The user's claims now, for a refresh; None once the user is gone or disabled."""
        user = self.users.get(subject)
        if user is None or user.disabled:
            return None
        return dict(user.claims)


def load_users(path: Path) -> tuple[UsersFile | None, list[ConfigProblem]]:
    """Parse and check a users file; every problem named with this file's line and key."""
    problems = Problems(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(None, "(file)", f"cannot read the users file: {exc}")
        return None, problems.items
    node, loader = compose(text, problems)
    if problems.items:
        return None, problems.items
    if node is None:  # an empty file: sign-in is on, and nobody can sign in yet
        return UsersFile(path, {}), []
    top = Section(node, "", problems, loader)
    users: dict[str, User] = {}
    for name, _, _ in top.entries():
        sec = top.section(name)
        password_hash = sec.text("password_hash") if sec.required("password_hash", "a hash") else ""
        if password_hash and not _known_hash(password_hash):
            sec.error(
                "password_hash",
                "expected an argon2id or bcrypt hash (plaintext passwords are refused);"
                " make one with: gateway hash-password",
            )
        claims: dict[str, Any] = {}
        for key in ("email", "name"):
            value = sec.opt_text(key)
            if value is not None:
                claims[key] = value
        roles = sec.text_list("roles")
        claims["roles"] = roles or []
        disabled = sec.flag("disabled", False)
        sec.finish()
        users[name] = User(password_hash, claims, disabled)
    if problems.items:
        return None, problems.items
    return UsersFile(path, users), []


@dataclass(frozen=True, slots=True)
class VerifyUrl:
    """POST {"username","password"} to the legacy app; 200 JSON = claims, 401/403 = wrong."""

    url: URL
    timeout: float

    async def check(
        self, username: str, password: str, client: aiohttp.ClientSession
    ) -> dict[str, Any] | None:
        payload = {"username": username, "password": password}
        try:
            async with (
                asyncio.timeout(self.timeout),
                client.post(self.url, json=payload, headers=_VERIFY_HEADERS) as reply,
            ):
                if reply.status in (401, 403):
                    return None
                if reply.status != 200:
                    raise CredentialsUnavailable(f"verify_url answered {reply.status}")
                body = json.loads(await reply.read())
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise CredentialsUnavailable(type(exc).__name__) from None
        if not isinstance(body, dict):
            raise CredentialsUnavailable("verify_url did not answer a JSON object")
        claims = {k: v for k, v in body.items() if k not in RESERVED_CLAIMS}
        subject = body.get("sub", username)
        if not isinstance(subject, str) or not subject:
            raise CredentialsUnavailable("verify_url answered a sub that is not a string")
        roles = claims.get("roles", [])
        if isinstance(roles, str):
            claims["roles"] = roles = [roles]
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise CredentialsUnavailable("verify_url answered roles that are not strings")
        return {"sub": subject, **claims}
