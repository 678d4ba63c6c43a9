"""forward_auth: answer an outer proxy's authorization subrequests (SPEC 7.5)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..yamlsource import Section
from .declare import key, read

_PATH = "^/[^?#]*$"


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardAuthConfig:
    path: str = field(
        default="/_gateway/auth",
        metadata=key(
            "Where the outer proxy sends its subrequests, on the public listener; answered"
            " only for trusted_proxies.",
            pattern=_PATH,
        ),
    )


def read_forward_auth(top: Section, trusted: bool) -> ForwardAuthConfig | None:
    """`trusted`: whether trusted_proxies lists anyone (the subrequests' only source)."""
    if not top.has("forward_auth"):
        top.value_node("forward_auth")  # read: absent is fine
        return None
    sec = top.section("forward_auth")
    values = read(sec, ForwardAuthConfig)
    path = values["path"]
    if not path.startswith("/") or "?" in path or "#" in path:
        sec.error("path", "expected a path starting with '/', without query")
    sec.finish()
    if not trusted:
        top.error(
            "forward_auth",
            "needs trusted_proxies: the outer proxy's addresses, the only peers whose"
            " subrequests (and X-Forwarded-*/X-Original-* headers) are answered",
        )
    return ForwardAuthConfig(**values)
