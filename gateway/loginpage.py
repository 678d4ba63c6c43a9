"""The login form: Jinja2 with autoescape on, built in or replaced from config.

A replacement template gets the same variables as the built-in one: `action`
(where the form posts), `next` (the hidden field), `username` (kept after a
failure), `error` (the message, or empty), `site` (`pages.title`, or none)
`request_id`, `password` (false: no password form, providers only) and
`providers` (a list of (label, start URL) pairs for OpenID Connect buttons,
to which `?next=` is appended). Every variable is
escaped, so a `next` or username full of markup stays text; only a template
that says `|safe` or `{% autoescape false %}` opts out, and it should not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jinja2

from .errors import ConfigProblem

BUILT_IN = Path(__file__).with_name("templates")


def environment(directory: Path | None) -> jinja2.Environment:
    """Templates from `directory` first, then the built-in ones: a replacement page may
    `{% extends "base.html" %}` to keep the gateway's look, or stand alone."""
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(BUILT_IN)]
    if directory is not None:
        loaders.insert(0, jinja2.FileSystemLoader(directory))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        auto_reload=False,
    )


class LoginPage:
    def __init__(self, template: Path | None = None) -> None:
        if template is None:
            self._template = environment(None).get_template("login.html")
        else:
            self._template = environment(template.parent).get_template(template.name)

    def render(
        self,
        *,
        action: str,
        next_path: str,
        username: str = "",
        error: str = "",
        site: str | None = None,
        request_id: str | None = None,
        password: bool = True,
        providers: Sequence[tuple[str, str]] = (),
    ) -> str:
        return self._template.render(
            action=action,
            next=next_path,
            username=username,
            error=error,
            site=site,
            request_id=request_id,
            password=password,
            providers=providers,
        )


def check_template(path: Path) -> list[ConfigProblem]:
    """Compile a replacement template now, so a syntax error is a config error with a line."""
    try:
        LoginPage(path)
    except jinja2.TemplateSyntaxError as exc:
        return [ConfigProblem(str(path), exc.lineno or 1, 1, "(template)", exc.message or "")]
    except (jinja2.TemplateError, OSError, UnicodeDecodeError) as exc:
        return [ConfigProblem(str(path), 1, 1, "(template)", f"cannot load: {exc}")]
    return []
