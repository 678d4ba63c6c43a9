"""The login form: Jinja2 with autoescape on, built in or replaced from config.

A replacement template gets the same variables as the built-in one: `action`
(where the form posts), `next` (the hidden field), `username` (kept after a
failure) and `error` (the generic message, or empty). Every variable is
escaped, so a `next` or username full of markup stays text; only a template
that says `|safe` or `{% autoescape false %}` opts out, and it should not.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from .errors import ConfigProblem

_BUILT_IN = Path(__file__).with_name("templates") / "login.html"


def _environment(directory: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        auto_reload=False,
    )


class LoginPage:
    def __init__(self, template: Path | None = None) -> None:
        path = template or _BUILT_IN
        self._template = _environment(path.parent).get_template(path.name)

    def render(self, *, action: str, next_path: str, username: str = "", error: str = "") -> str:
        return self._template.render(action=action, next=next_path, username=username, error=error)


def check_template(path: Path) -> list[ConfigProblem]:
    """Compile a replacement template now, so a syntax error is a config error with a line."""
    try:
        LoginPage(path)
    except jinja2.TemplateSyntaxError as exc:
        return [ConfigProblem(str(path), exc.lineno or 1, 1, "(template)", exc.message or "")]
    except (jinja2.TemplateError, OSError, UnicodeDecodeError) as exc:
        return [ConfigProblem(str(path), 1, 1, "(template)", f"cannot load: {exc}")]
    return []
