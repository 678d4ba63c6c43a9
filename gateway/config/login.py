"""login: sign-in, refresh and logout, and who may sign in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from ..credentials import UsersFile, load_users
from ..loginpage import check_template
from ..yamlsource import Section
from .declare import key, read
from .endpoints import HTTP_URL, parse_url, shown
from .providers import ProviderConfig, read_providers

_PATH = "^/[^?#]*$"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginConfig:
    path: str = field(
        default="/login", metadata=key("The login page and form target.", pattern=_PATH)
    )
    logout_path: str = field(
        default="/logout",
        metadata=key("Logout (POST, or a same-site GET); differs from path.", pattern=_PATH),
    )
    users_file: Path | None = field(
        default=None,
        metadata=key(
            "YAML users file (argon2id/bcrypt hashes); relative: to the config's directory."
        ),
    )
    users: UsersFile | None = field(default=None)  # the parsed users_file
    verify_url: URL | None = field(
        default=None,
        metadata=key(
            "Legacy app URL that checks a username and password (POST JSON); http:// or https://.",
            pattern=HTTP_URL,
        ),
    )
    verify_timeout: float = field(
        default=5, metadata=key("The most a verify_url call may take.", minimum=0.001)
    )
    template: Path | None = field(
        default=None, metadata=key("Jinja2 template replacing the built-in login page.")
    )
    max_failures: int = field(
        default=5,
        metadata=key(
            "Failed sign-ins per username and client within failure_window before 429.", minimum=1
        ),
    )
    failure_window: float = field(
        default=15 * 60, metadata=key("The window failures are counted in.", minimum=1)
    )
    providers: tuple[ProviderConfig, ...] = field(
        default=(),
        metadata=key(
            "OpenID Connect providers: a button each beside (or instead of) the password form."
        ),
    )

    @property
    def signs_in(self) -> bool:
        """Some way to sign in here: a password backend or a provider."""
        return bool(self.users_file or self.verify_url or self.providers)


def read_login(sec: Section, base: Path) -> LoginConfig:
    values = read(sec, LoginConfig)
    for name in ("path", "logout_path"):
        if not values[name].startswith("/") or "?" in values[name] or "#" in values[name]:
            sec.error(name, "expected a path starting with '/', without query")
    if values["path"] == values["logout_path"]:
        sec.error("logout_path", "must differ from login.path")
    users_file, template = sec.opt_text("users_file"), sec.opt_text("template")
    verify_text = sec.opt_text("verify_url")
    if users_file and verify_text:
        sec.error("verify_url", "use users_file or verify_url, not both")
    verify_url = parse_url(verify_text)
    bad_verify = (
        verify_url is None or verify_url.scheme not in ("http", "https") or not verify_url.host
    )
    if verify_text and bad_verify:
        sec.error("verify_url", f"expected an http:// or https:// URL, got {shown(verify_text)!r}")
    elif verify_url is not None and verify_url.password:
        sec.error("verify_url", "a password never goes in the YAML; the URL must not carry one")
    files: dict[str, Path | None] = {}
    for name, text in (("users_file", users_file), ("template", template)):
        files[name] = sec.problems.uses(base / text) if text else None
        if text and not (base / text).is_file():
            sec.error(name, f"file not found: {base / text}")
            files[name] = None
    users = None
    if files["users_file"] is not None:
        users, users_problems = load_users(files["users_file"])
        sec.problems.items.extend(users_problems)
    if files["template"] is not None:
        sec.problems.items.extend(check_template(files["template"]))
    providers = read_providers(sec, base)
    sec.finish()
    return LoginConfig(
        **values,
        users_file=files["users_file"],
        users=users,
        verify_url=verify_url,
        template=files["template"],
        providers=providers,
    )
