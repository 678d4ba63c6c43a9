"""pages: the gateway's own pages (login, errors): a name on them, and a replacement template."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..loginpage import check_template
from ..yamlsource import Section
from .declare import key, read


@dataclass(frozen=True, slots=True, kw_only=True)
class PagesConfig:
    title: str | None = field(
        default=None,
        metadata=key(
            "A name shown on every page the gateway makes (sign-in, errors): the team's or"
            " the app's."
        ),
    )
    template: Path | None = field(
        default=None,
        metadata=key(
            "Jinja2 template replacing the built-in error page; relative: to the config's"
            " directory."
        ),
    )


def read_pages(sec: Section, base: Path) -> PagesConfig:
    values = read(sec, PagesConfig)
    text = sec.opt_text("template")
    template = None
    if text:
        template = sec.problems.uses(base / text)
        if not template.is_file():
            sec.error("template", f"file not found: {template}")
            template = None
        else:
            sec.problems.items.extend(check_template(template))
    sec.finish()
    return PagesConfig(**values, template=template)
