"""The editor schema (`gateway schema`) agrees with the config: same keys, choices, defaults."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import jsonschema
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from yarl import URL

from gateway.config import LOG_LEVELS, RESTART_KEYS, load
from gateway.config.cookies import SameSite
from gateway.config.routes import HTTP_METHODS
from gateway.errors import ConfigError, ConfigProblem
from gateway.keys import Algorithm
from gateway.routing import AuthMode, OnUnauthenticated
from gateway.schema import DURATION, config_schema
from gateway.yamlsource import Section, parse_duration
from tests.conftest import ROOT, SECRET_ENV

SCHEMA = config_schema()
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)

BASE: dict[str, Any] = {
    "upstream": "http://127.0.0.1:3000",
    "listen": "127.0.0.1:0",
    "admin_listen": "127.0.0.1:1",
    "tokens": {"secret_env": SECRET_ENV},
}


# -- helpers -----------------------------------------------------------------------------


def schema_problems(doc: Any, validator: jsonschema.Draft7Validator = VALIDATOR) -> set[str]:
    """Where the schema objects, as the config names keys: `routes[0].auth`, `tokens.x`."""
    found = set()
    for error in validator.iter_errors(doc):
        where = dotted(error.absolute_path)
        if error.validator == "additionalProperties":
            allowed = set(error.schema.get("properties", {}))
            found |= {join(where, key) for key in error.instance if key not in allowed}
        else:
            found.add(where)
    return found


def dotted(path: Any) -> str:
    text = ""
    for part in path:
        text = f"{text}[{part}]" if isinstance(part, int) else join(text, str(part))
    return text


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def load_problems(tmp_path: Path, doc: Any) -> list[ConfigProblem]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        load(path)
    except ConfigError as exc:
        return exc.problems
    return []


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def schema_keys(schema: dict[str, Any], path: str = "") -> dict[str, set[str]]:
    """Section path (`routes[]`, `tokens.previous_keys[]`, top level: '') -> its keys."""
    found: dict[str, set[str]] = {}
    if "properties" in schema:
        found[path] = set(schema["properties"])
        for key, sub in schema["properties"].items():
            found |= schema_keys(sub, join(path, key))
    if isinstance(schema.get("items"), dict):
        found |= schema_keys(schema["items"], path + "[]")
    return found


def leaf_paths() -> Iterator[tuple[str, dict[str, Any]]]:
    for section, keys in sorted(schema_keys(SCHEMA).items()):
        for key in sorted(keys):
            yield join(section, key), subschema(join(section, key))


def subschema(path: str) -> dict[str, Any]:
    node = SCHEMA
    for part in re.findall(r"[^.\[\]]+|\[\]", path):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def nested(path: str, value: Any) -> dict[str, Any]:
    """`routes[].auth`, 'x' -> {'routes': [{'auth': 'x'}]}."""
    parts = re.findall(r"[^.\[\]]+|\[\]", path)
    for part in reversed(parts):
        value = [value] if part == "[]" else {part: value}
    assert isinstance(value, dict)
    return value


def sample(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    return {"object": {}, "array": [], "integer": 1, "boolean": True}.get(str(kind), "x")


def pem_ec_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


# -- the schema itself and the command -----------------------------------------------------


def test_schema_is_a_valid_draft_07_schema() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_gateway_schema_prints_it_as_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "schema"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == SCHEMA


def test_every_section_refuses_unknown_keys_and_every_key_is_described() -> None:
    faults = []
    for section in schema_keys(SCHEMA):
        if subschema(section).get("additionalProperties") is not False:
            faults.append(f"{section or '(top)'}: additionalProperties is not false")
    for path, schema in leaf_paths():
        if not schema.get("description"):
            faults.append(f"{path}: no description")
    assert faults == []


# -- what it accepts -------------------------------------------------------------------------


def configs_in(text: str) -> Iterator[Any]:
    """Config files in a YAML file: itself, or `*.yaml` entries of Kubernetes ConfigMaps."""
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            for name, body in (doc.get("data") or {}).items():
                parsed = yaml.safe_load(body) if name.endswith((".yaml", ".yml")) else None
                if isinstance(parsed, dict) and "upstream" in parsed:
                    yield parsed
        elif isinstance(doc, dict) and "upstream" in doc:
            yield doc


def shipped_configs() -> list[Any]:
    found = []
    files = [ROOT / "config.yaml", *ROOT.glob("deploy/**/*.y*ml"), *ROOT.glob("docs/**/*.y*ml")]
    for path in sorted(files):
        for i, doc in enumerate(configs_in(path.read_text())):
            found.append(pytest.param(doc, id=f"{path.relative_to(ROOT)}#{i}"))
    return found


@pytest.mark.parametrize("doc", shipped_configs())
def test_schema_accepts_the_shipped_configs(doc: Any) -> None:
    assert schema_problems(doc) == set()


def doc_examples() -> list[Any]:
    """```yaml blocks of the docs that are configs or pieces of one (users files skipped)."""
    top, route = set(SCHEMA["properties"]), set(subschema("routes[]")["properties"])
    found = []
    for path in sorted([ROOT / "README.md", *ROOT.glob("docs/**/*.md")]):
        if not path.is_file():
            continue
        text = path.read_text()
        for match in re.finditer(r"^```ya?ml\n(.*?)^```", text, re.M | re.S):
            line = text.count("\n", 0, match.start()) + 1
            try:
                doc = yaml.safe_load(match.group(1))
            except yaml.YAMLError:
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            if isinstance(doc, dict) and set(doc) & top:
                whole = "upstream" in doc and "tokens" in doc
                found.append(pytest.param(doc, not whole, id=where))
            for item in doc if isinstance(doc, list) else []:
                if isinstance(item, dict) and set(item) & route:
                    found.append(pytest.param({"routes": [item]}, True, id=where))
    return found


@pytest.mark.parametrize(("doc", "fragment"), doc_examples())
def test_schema_accepts_the_examples_in_the_docs(doc: Any, fragment: bool) -> None:
    # a fragment leaves out what a whole file must have (upstream or forward_auth, tokens)
    whole = {k: v for k, v in SCHEMA.items() if k != "anyOf"}
    schema = {**whole, "required": []} if fragment else SCHEMA
    assert schema_problems(doc, jsonschema.Draft7Validator(schema)) == set()


@pytest.mark.parametrize(
    "patch",
    [
        {"cookies": None, "login": None, "routes": None, "identity_headers": None},
        {"identity_headers": {}},
        {"tokens": {"secret_env": None, "secret_file": "jwt.secret"}},
        {"tokens": {"secret_env": None, "algorithm": "ES256", "public_key_files": ["a.pem"]}},
        {"store": "rediss://gateway@redis.internal:6380/0", "store_password_env": "REDIS_PW"},
        {"store": "redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster/0", "workers": 2},
        {"store": "rediss+cluster://gateway@n1:6379,n2:6379", "store_password_env": "REDIS_PW"},
        {"listen": "[::]:8080", "admin_listen": "localhost:09090"},
        {"upstream": "HTTPS://app.internal/"},
        {"routes": [{"regex": "^/v[0-9]+/", "methods": ["get", "Post"], "auth": "optional"}]},
        {"routes": [{"path": "/a", "roles": ["admin"], "auth": "required"}]},
        {"tokens": {"access_ttl": " 1.5 h ", "leeway": "0s"}, "store_timeout": "250ms"},
        {"login": {"verify_url": "https://legacy.internal/api/check", "verify_timeout": "2s"}},
    ],
)
def test_schema_accepts_what_config_accepts(patch: dict[str, Any]) -> None:
    doc = merged(BASE, patch)
    doc["tokens"] = {k: v for k, v in doc["tokens"].items() if v is not None}
    assert schema_problems(doc) == set()


def test_durations_match_what_the_config_parses() -> None:
    pattern = re.compile(subschema("upstream_timeout")["pattern"])
    for text in ["500ms", "30s", "1.5s", "15m", "1h", "14d", " 2 s ", "0s", "30", "30S", "1h30m",
                 "-1s", "1.s", ".5s", "1e3s", "15 min", "", "s"]:  # fmt: skip
        assert bool(pattern.search(text)) == (parse_duration(text) is not None), text


@pytest.mark.parametrize(
    "value",
    ["0.0.0.0:8080", "[::1]:0", "localhost:65535", "h:65536", "8080", ":8080", "[::1", "a:b:1"],
)
def test_listen_addresses_match_what_the_config_accepts(
    tmp_path: Path, secret: str, value: str
) -> None:
    config_ok = not [p for p in load_problems(tmp_path, merged(BASE, {"listen": value}))]
    assert bool(re.search(subschema("listen")["pattern"], value)) == config_ok


# -- what it rejects, and the config too ----------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "schema_key", "config_key"),
    [
        ({"upstream_timout": "1s"}, "upstream_timout", "upstream_timout"),
        ({"tokens": {"acess_ttl": "5m"}}, "tokens.acess_ttl", "tokens.acess_ttl"),
        ({"routes": [{"path": "/a", "auht": "public"}]}, "routes[0].auht", "routes[0].auht"),
        ({"cookies": {"same_site": "Lax"}}, "cookies.same_site", "cookies.same_site"),
        ({"routes": [{"path": "/a", "auth": "maybe"}]}, "routes[0].auth", "routes[0].auth"),
        ({"default": "open"}, "default", "default"),
        ({"tokens": {"access_ttl": 15}}, "tokens.access_ttl", "tokens.access_ttl"),
        ({"upstream_timeout": "1h30m"}, "upstream_timeout", "upstream_timeout"),
        ({"store_timeout": "30 sec"}, "store_timeout", "store_timeout"),
        ({"listen": 8080}, "listen", "listen"),
        ({"workers": 0}, "workers", "workers"),
        ({"cookies": {"secure": "yes"}}, "cookies.secure", "cookies.secure"),
        ({"upstream": "http://127.0.0.1:3000/app"}, "upstream", "upstream"),
        ({"store": "redis://:hunter2@redis:6379/0"}, "store", "store"),
        ({"store": "redis://redis:6379/0?db=1"}, "store", "store"),
        ({"store": "redis+sentinel://gw:hunter2@s1:26379/m"}, "store", "store"),
        ({"store": "redis+cluster://n1:6379?x=1"}, "store", "store"),
        ({"routes": [{"auth": "public"}]}, "routes[0]", "routes[0].path"),
        ({"routes": [{"path": "/a", "regex": "^/a"}]}, "routes[0]", "routes[0].path"),
        ({"routes": [{"path": "a"}]}, "routes[0].path", "routes[0].path"),
        ({"routes": [{"path": "/a", "methods": []}]}, "routes[0].methods", "routes[0].methods"),
        (
            {"routes": [{"path": "/a", "methods": ["FETCH"]}]},
            "routes[0].methods[0]",
            "routes[0].methods",
        ),
        (
            {"routes": [{"path": "/a", "auth": "public", "roles": ["x"]}]},
            "routes[0]",
            "routes[0].roles",
        ),
        (
            {"routes": [{"path": "/a", "auth": "deny", "on_unauthenticated": "status"}]},
            "routes[0]",
            "routes[0].on_unauthenticated",
        ),
        ({"tokens": {"secret_env": None}}, "tokens", "tokens.secret_env"),
        ({"tokens": {"secret_file": "jwt"}}, "tokens", "tokens.secret_env"),
        ({"tokens": {"private_key_file": "k.pem"}}, "tokens", "tokens.private_key_file"),
        (
            {"tokens": {"secret_env": None, "algorithm": "ES256"}},
            "tokens",
            "tokens.private_key_file",
        ),
        ({"tokens": {"algorithm": "hs256"}}, "tokens.algorithm", "tokens.algorithm"),
        ({"store_password_env": "A", "store_password_file": "b"}, "", "store_password_file"),
        (
            {"login": {"users_file": "u.yaml", "verify_url": "http://x/check"}},
            "login",
            "login.verify_url",
        ),
        ({"login": {"path": "/login?x"}}, "login.path", "login.path"),
        ({"identity_headers": {"X Bad": "sub"}}, "identity_headers", "identity_headers.X Bad"),
        (
            {"identity_headers": {"X-User-Id": 3}},
            "identity_headers.X-User-Id",
            "identity_headers.X-User-Id",
        ),
        (
            {"identity_assertion": {"ttl": "30s"}},
            "identity_assertion",
            "identity_assertion.private_key_file",
        ),
        ({"log_level": "verbose"}, "log_level", "log_level"),
        (
            {"tokens": {"previous_keys": [{"secret_env": "OLD"}]}},
            "tokens.previous_keys[0]",
            "tokens.previous_keys[0].kid",
        ),
        (
            {"tokens": {"previous_keys": [{"kid": "a"}]}},
            "tokens.previous_keys[0]",
            "tokens.previous_keys[0].secret_env",
        ),
    ],
)
def test_schema_and_config_refuse_the_same_mistakes(
    tmp_path: Path, secret: str, patch: dict[str, Any], schema_key: str, config_key: str
) -> None:
    doc = merged(BASE, patch)
    doc["tokens"] = {k: v for k, v in doc["tokens"].items() if v is not None}
    assert schema_key in schema_problems(doc)
    assert config_key in {p.key for p in load_problems(tmp_path, doc)}


# -- drift: keys, choices and defaults in step with the config ---------------------------------


def test_every_key_config_reads_is_in_the_schema_and_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Section.finish reports every key not read as unknown: what a section has read by then is
    # exactly the set of keys the config accepts there.
    accepted: dict[str, set[str]] = {}
    finish = Section.finish

    def spy(self: Section) -> None:
        keys = accepted.setdefault(re.sub(r"\[\d+\]", "[]", self.path), set())
        keys |= self._read
        finish(self)

    monkeypatch.setattr(Section, "finish", spy)
    everything = {
        "tokens": {"previous_keys": [{}]},
        "routes": [{}],
        "identity_assertion": {},
        "forward_auth": {},
        "login": {"providers": [{"claims": {}}]},
    }
    load_problems(tmp_path, everything)
    in_config = {join(s, k) for s, keys in accepted.items() for k in keys}
    in_schema = {join(s, k) for s, keys in schema_keys(SCHEMA).items() for k in keys}
    assert in_config - in_schema == set(), "the config accepts these; declare them"
    assert in_schema - in_config == set(), "the schema has these; the config does not read them"


@pytest.mark.parametrize(("path", "schema"), [pytest.param(*p, id=p[0]) for p in leaf_paths()])
def test_config_knows_every_schema_key(tmp_path: Path, path: str, schema: dict[str, Any]) -> None:
    key = path.replace("[]", "[0]")
    unknown = [p for p in load_problems(tmp_path, nested(path, sample(schema))) if p.key == key]
    assert not [p for p in unknown if p.message.startswith("unknown key")]


def enum_paths() -> Iterator[Any]:
    for path, schema in leaf_paths():
        if "enum" in schema:
            yield pytest.param(path, schema["enum"], id=path)


@pytest.mark.parametrize(("path", "options"), list(enum_paths()))
def test_choices_match_the_config(tmp_path: Path, path: str, options: list[str]) -> None:
    key = path.replace("[]", "[0]")
    messages = [p.message for p in load_problems(tmp_path, nested(path, "bogus")) if p.key == key]
    assert messages == [f"expected one of {', '.join(options)}, got 'bogus'"]


def test_http_methods_match_the_config() -> None:
    methods = subschema("routes[].methods")["items"]["anyOf"][0]["enum"]
    assert set(methods) == HTTP_METHODS


def test_choices_are_the_literals_the_code_is_typed_with() -> None:
    """One list each: the schema, the parser and mypy all read the same `Literal`."""
    assert subschema("routes[].auth")["enum"] == list(get_args(AuthMode))
    assert subschema("default")["enum"] == list(get_args(AuthMode))
    assert subschema("routes[].on_unauthenticated")["enum"] == list(get_args(OnUnauthenticated))
    assert subschema("tokens.algorithm")["enum"] == list(get_args(Algorithm))
    assert subschema("cookies.same_site")["enum"] == list(get_args(SameSite))
    assert subschema("log_level")["enum"] == list(LOG_LEVELS)


def test_what_a_reload_cannot_change_says_so() -> None:
    restart = set(RESTART_KEYS)
    described = {p for p, s in leaf_paths() if "Restart to change." in s["description"]}
    # store_password is built from the two keys that name it
    assert described == restart - {"store_password"} | {"store_password_env", "store_password_file"}


def test_defaults_match_the_config(tmp_path: Path, secret: str) -> None:
    key = pem_ec_key(tmp_path / "assertion.pem")
    doc = merged(
        {k: v for k, v in BASE.items() if "listen" not in k},
        {
            "routes": [{"path": "/x"}],
            "identity_assertion": {"private_key_file": key.name},
            "forward_auth": {},
            "trusted_proxies": ["10.0.0.0/8"],
            "login": {"providers": [{"id": "p", "issuer": "https://i", "client_id": "c"}]},
        },
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    config = load(path)
    provider = config.login.providers[0]
    actual = {
        "routes[].auth": config.routes.routes[0].auth,
        "routes[].on_unauthenticated": config.routes.routes[0].on_unauthenticated,
        "default": config.routes.default.auth,
        "tokens.algorithm": config.tokens.keys.algorithm,
        "identity_headers": dict(config.identity_headers),
        "login.providers[].scopes": list(provider.scopes),
        "login.providers[].timeout": provider.timeout,
        "login.providers[].trust_unverified_email": provider.trust_unverified_email,
        **{
            f"login.providers[].claims.{k}": getattr(provider.claims, k)
            for k in ("sub", "email", "name", "roles")
        },
    }
    checked = []
    for leaf, schema in leaf_paths():
        if "default" not in schema:
            continue
        if leaf in actual:
            value: Any = actual[leaf]
        else:
            value = config
            for part in leaf.split("."):
                value = getattr(value, part)
        default = schema["default"]
        if schema.get("pattern") == DURATION:
            default = parse_duration(default)
        elif isinstance(value, URL):
            default = URL(default)  # memory:// reads back as memory:
        elif isinstance(default, str):
            value = str(value)
        assert value == default, leaf
        checked.append(leaf)
    assert "tokens.access_ttl" in checked and "identity_assertion.ttl" in checked


def test_the_complete_example_of_the_reference_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for heading in ("## A complete example", "The smallest valid file is:"):
        block = re.search(r"```yaml\n(.*?)```", text[text.index(heading) :], re.S)
        assert block is not None, heading
        (tmp_path / "users.yaml").write_text("")
        (tmp_path / "secrets").mkdir(exist_ok=True)
        pem_ec_key(tmp_path / "secrets" / "assertion.pem")
        for name in ("JWT_SECRET", "JWT_SECRET_2025", "REDIS_PASSWORD"):
            monkeypatch.setenv(name, f"{name.lower()}-" + "x" * 32)
        path = tmp_path / "config.yaml"
        path.write_text(block.group(1))
        assert load(path).warnings == ()
        assert schema_problems(yaml.safe_load(block.group(1))) == set()


# -- the reference's key tables say the same ------------------------------------------------------


def reference_tables() -> dict[str, dict[str, list[str]]]:
    """Section path -> key -> its row's cells, from docs/configuration.md's key tables."""
    tables: dict[str, dict[str, list[str]]] = {}
    section, rows = "", None
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        heading = re.match(r"^## (?:`(\w+)`|Top-level keys)", line)
        if heading:
            section = {"routes": "routes[]"}.get(heading[1] or "", heading[1] or "")
        if line.startswith("| key") and "| default |" in line:
            inner = re.search(r"in each `(\w+)` item", line)
            rows = tables.setdefault(join(section, inner[1]) + "[]" if inner else section, {})
        elif rows is not None and line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0].strip("`")] = cells[1:]
        elif not line.startswith("|"):
            rows = None
    return tables


def test_the_reference_lists_every_key_with_its_default_and_restart() -> None:
    tables, restart = reference_tables(), set(RESTART_KEYS) - {"store_password"}
    restart |= {"store_password_env", "store_password_file"}
    assert set(tables) >= {"", "tokens", "tokens.previous_keys[]", "cookies", "login", "routes[]"}
    for section, rows in tables.items():
        assert set(rows) == schema_keys(SCHEMA)[section], section or "(top)"
        for name, (_, default, *rest) in rows.items():
            schema = subschema(join(section, name))
            shown = re.fullmatch(r"`([^`]+)`", default)
            if "default" in schema and not isinstance(schema["default"], dict):
                assert shown is not None, f"{join(section, name)}: no default in the reference"
                value = schema["default"]
                declared = json.dumps(value) if isinstance(value, bool | list) else str(value)
                if schema.get("pattern") == DURATION:
                    seconds = parse_duration(shown[1]), parse_duration(declared)
                    assert seconds[0] == seconds[1], join(section, name)
                else:
                    assert shown[1] == declared, join(section, name)
            if section == "":
                assert (rest[-1] == "restart") == (name in restart), name
