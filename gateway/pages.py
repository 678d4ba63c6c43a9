"""The gateway's own answers to people: one small template set in the login page's style.

Every answer the gateway makes itself to a browser navigation (400, 403, 404,
429, 502, 503, 504...) is a page with the status, one plain sentence of what
happened and what to do, the site's name (`pages.title`) and the request id,
so a user can quote it and an operator can find the log lines. A 403 to a
signed-in user says who is signed in and offers to sign out or to sign in as
someone else. Programs keep getting JSON (responses.py decides which).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from .loginpage import environment

# What each status says when the caller has nothing more specific.
HEADINGS = {
    400: "Bad request",
    403: "No access",
    404: "Not found",
    405: "Not allowed",
    417: "Expectation failed",
    426: "Upgrade required",
    429: "Too many attempts",
    502: "Application unreachable",
    503: "Briefly unavailable",
    504: "Application too slow",
}
# Content-Security-Policy of every page: it shows itself and may post a form to this site.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:;"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class Who:
    """Who is signed in, for a 403: where to sign out and where to sign in again."""

    user: str
    logout_path: str | None
    login_path: str | None
    next_path: str


class Pages:
    """Lives in a config snapshot: the site's name and the (replaceable) error template."""

    def __init__(self, title: str | None = None, template: Path | None = None) -> None:
        self.title = title
        if template is None:
            self._template = environment(None).get_template("error.html")
        else:
            self._template = environment(template.parent).get_template(template.name)

    def error(
        self, status: int, message: str, request_id: str | None, who: Who | None = None
    ) -> str:
        return self._template.render(
            status=status,
            heading=HEADINGS.get(status, "Error"),
            message=message,
            request_id=request_id,
            site=self.title,
            user=who.user if who else None,
            logout_path=who.logout_path if who else None,
            login_path=who.login_path if who else None,
            next=who.next_path if who else "/",
        )


# The snapshot's pages for the request being handled (set by the pipeline), so every
# answer renders with the config it was decided under.
CURRENT: ContextVar[Pages | None] = ContextVar("pages", default=None)
_DEFAULT: list[Pages] = []


def current() -> Pages:
    pages = CURRENT.get()
    if pages is not None:
        return pages
    if not _DEFAULT:
        _DEFAULT.append(Pages())
    return _DEFAULT[0]
