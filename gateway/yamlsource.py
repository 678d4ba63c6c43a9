"""Reading YAML while keeping line and column of every value.

PyYAML's `safe_load` throws positions away, and an ops person fixing a bad
edit needs `file:line:col`. So the config is composed into nodes, and the
schema code walks them through `Section`, which records every problem instead
of raising at the first one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError, ConfigProblem

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class Problems:
    """Collects problems for one file; raises them all together at the end.

    Also notes every other file the config names (users file, keys, template):
    a change to any of them is a reason to reload.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[ConfigProblem] = []
        self.files: list[Path] = []

    def uses(self, path: Path) -> Path:
        self.files.append(path)
        return path

    def add(self, node: yaml.Node | None, key: str, message: str) -> None:
        line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (1, 1)
        self.items.append(ConfigProblem(self.file, line, col, key, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(sorted(self.items, key=lambda p: (p.line, p.col)))


def compose(text: str, problems: Problems) -> tuple[yaml.Node | None, yaml.SafeLoader]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        problems.items.append(ConfigProblem(problems.file, line, col, "(yaml)", what))
        return None, loader
    except yaml.YAMLError as exc:
        problems.items.append(ConfigProblem(problems.file, 1, 1, "(yaml)", str(exc)))
        return None, loader
    return node, loader


def parse_duration(text: str) -> float | None:
    """'500ms' -> 0.5; None when the text is not a duration."""
    m = _DURATION.match(text)
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)] if m else None


class Section:
    """A YAML mapping being validated: typed getters that record problems.

    Every getter returns a usable default on error so validation can go on
    and report the next problem too. Keys never read are reported as unknown
    by `finish`, with a suggestion when one is close.
    """

    def __init__(
        self,
        node: yaml.Node | None,
        path: str,
        problems: Problems,
        loader: yaml.SafeLoader,
        parent_node: yaml.Node | None = None,
    ) -> None:
        self.node = node if node is not None else parent_node
        self.path = path
        self.problems = problems
        self._loader = loader
        self._entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        self._read: set[str] = set()
        if node is None or _is_null(node):
            return
        if not isinstance(node, yaml.MappingNode):
            problems.add(node, path or "(top)", "expected a mapping of keys to values")
            return
        for key_node, value_node in node.value:
            key = self.plain(key_node)
            if not isinstance(key, str):
                problems.add(key_node, self._key(str(key)), "keys must be strings")
                continue
            if key in self._entries:
                problems.add(key_node, self._key(key), "duplicate key")
                continue
            self._entries[key] = (key_node, value_node)

    # -- plumbing -----------------------------------------------------------

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def plain(self, node: yaml.Node) -> Any:
        return self._loader.construct_object(node, deep=True)

    def error(self, key: str, message: str) -> None:
        entry = self._entries.get(key)
        self.problems.add(entry[1] if entry else self.node, self._key(key), message)

    def has(self, key: str) -> bool:
        return key in self._entries

    def value_node(self, key: str) -> yaml.Node | None:
        self._read.add(key)
        entry = self._entries.get(key)
        return entry[1] if entry else None

    def entries(self) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        for key, (key_node, value_node) in self._entries.items():
            self._read.add(key)
            yield key, key_node, value_node

    def finish(self) -> None:
        known = self._read
        for key, (key_node, _) in self._entries.items():
            if key in known:
                continue
            near = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            self.problems.add(key_node, self._key(key), f"unknown key{hint}")

    def section(self, key: str) -> Section:
        return Section(self.value_node(key), self._key(key), self.problems, self._loader, self.node)

    def sections(self, key: str) -> list[Section]:
        node = self.value_node(key)
        if node is None or _is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(key, "expected a list")
            return []
        return [
            Section(item, f"{self._key(key)}[{i}]", self.problems, self._loader)
            for i, item in enumerate(node.value)
        ]

    # -- typed getters ------------------------------------------------------

    def _get(self, key: str, default: T, check: Callable[[Any], T | None], expected: str) -> T:
        node = self.value_node(key)
        if node is None:
            return default
        value = self.plain(node)
        converted = check(value)
        if converted is None:
            self.problems.add(node, self._key(key), f"expected {expected}, got {value!r}")
            return default
        return converted

    def required(self, key: str, expected: str) -> bool:
        if key in self._entries:
            return True
        self._read.add(key)
        self.problems.add(self.node, self._key(key), f"required key is missing ({expected})")
        return False

    def text(self, key: str, default: str = "") -> str:
        return self._get(
            key, default, lambda v: v if isinstance(v, str) and v else None, "a string"
        )

    def opt_text(self, key: str) -> str | None:
        if not self.has(key):
            self._read.add(key)
            return None
        return self.text(key) or None

    def flag(self, key: str, default: bool) -> bool:
        return self._get(
            key, default, lambda v: v if isinstance(v, bool) else None, "true or false"
        )

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        def check(v: Any) -> int | None:
            ok = isinstance(v, int) and not isinstance(v, bool) and v >= minimum
            return v if ok else None

        return self._get(key, default, check, f"a whole number >= {minimum}")

    def duration(self, key: str, default: float, minimum: float = 0.0) -> float:
        def check(v: Any) -> float | None:
            seconds = parse_duration(v) if isinstance(v, str) else None
            return seconds if seconds is not None and seconds >= minimum else None

        floor = (
            " greater than 0" if 0 < minimum < 1 else f" of at least {minimum:g}s" * bool(minimum)
        )
        return self._get(
            key, default, check, f"a duration with a unit (500ms, 30s, 15m, 14d){floor}"
        )

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        return self._get(
            key,
            default,
            lambda v: v if v in options else None,
            "one of " + ", ".join(options),
        )

    def text_list(self, key: str) -> list[str] | None:
        def check(v: Any) -> list[str] | None:
            ok = isinstance(v, list) and all(isinstance(i, str) and i for i in v)
            return v if ok else None

        if not self.has(key):
            self._read.add(key)
            return None
        return self._get(key, None, check, "a list of strings")


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"
