"""The manifests in deploy/kubernetes/ agree with the config they carry.

Each variant's ConfigMaps and Secrets are laid out under tmp_path the way the pod
mounts them (volumeMounts, keys, items), the gateway's config is loaded from there
with the env the container gets, and then ports, probes, the Service, env names,
file names, the Redis Service and the pod's hardening are compared with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import Config, load
from gateway.errors import ConfigError
from gateway.redis_topology import from_url
from tests.conftest import ROOT
from tests.helpers import FINAL

K8S = ROOT / "deploy" / "kubernetes"
VARIANTS = {
    "sidecar": ("sidecar.yaml",),
    "replicas-redis": ("replicas-redis.yaml", "redis.yaml"),
    # the same gateway with its store: line switched to the one its comment gives
    "replicas-sentinel": ("replicas-redis.yaml", "redis-sentinel.yaml"),
    "replicas-cluster": ("replicas-redis.yaml", "redis-cluster.yaml"),
}
HA_STORES = {"replicas-sentinel": "redis+sentinel", "replicas-cluster": "redis+cluster"}
TEST_VALUE = "kubernetes-test-value-" + "z" * 64  # stands in for every Secret value
PLACEHOLDER = "CHANGE-ME"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# config keys that name a file, as (section, key); "" is the top level
FILE_KEYS = (
    ("tokens", "secret_file"),
    ("tokens", "private_key_file"),
    ("tokens", "public_key_files"),
    ("", "store_password_file"),
    ("login", "users_file"),
    ("login", "template"),
    ("identity_assertion", "private_key_file"),
    ("identity_assertion", "previous_public_key_files"),
)
PREVIOUS_KEY_FILES = ("secret_file", "public_key_file")  # in each tokens.previous_keys item
Doc = dict[str, Any]


def documents(variant: str) -> list[Doc]:
    docs = []
    for name in VARIANTS[variant]:
        with (K8S / name).open() as stream:
            docs += [doc for doc in yaml.safe_load_all(stream) if doc]
    return docs


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name!r}: {len(found)} in the manifests"
    return found[0]


def secret_keys(secret: Doc) -> set[str]:
    return set(secret.get("stringData") or {}) | set(secret.get("data") or {})


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def port_number(container: Doc, port: int | str) -> int:
    """A probe's or Service's port (a number, or the name of a containerPort)."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return int(number)


def pre_stop_seconds(container: Doc) -> int:
    hook = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    command = hook.get("exec", {}).get("command", [])
    return int(command[1]) if command[:1] == ["sleep"] else 0


@dataclass
class Deployed:
    """One variant: its manifests, the gateway pod, and the config loaded as the pod would."""

    docs: list[Doc]
    deployment: Doc
    pod: Doc  # spec.template.spec
    gateway: Doc  # the container named gateway
    apps: list[Doc]  # the other containers of the pod
    files: dict[str, str]  # the mounted files as the pod sees them: path -> text
    raw: dict[str, Any]  # the config as plain YAML
    config: Config

    def file_references(self) -> list[tuple[str, str]]:
        """(key, path) for every file the config names."""
        refs = []
        for section, key in FILE_KEYS:
            value = (self.raw.get(section) or {}).get(key) if section else self.raw.get(key)
            for path in value if isinstance(value, list) else [value] if value else []:
                refs.append((f"{section}.{key}".lstrip("."), str(path)))
        for i, item in enumerate(self.raw["tokens"].get("previous_keys") or []):
            for key in PREVIOUS_KEY_FILES:
                if item.get(key):
                    refs.append((f"tokens.previous_keys[{i}].{key}", str(item[key])))
        return refs

    def env_source(self, name: str) -> Doc:
        entries = [e for e in self.gateway.get("env", []) if e["name"] == name]
        assert len(entries) == 1, f"the gateway container's env has no {name}"
        entry: Doc = entries[0]
        return entry


def env_names(raw: dict[str, Any]) -> list[str]:
    """Every environment variable the config reads."""
    tokens = raw["tokens"]
    names = [tokens.get("secret_env"), raw.get("store_password_env")]
    names += [item.get("secret_env") for item in tokens.get("previous_keys") or []]
    return [name for name in names if name]


def gateway_deployment(docs: list[Doc]) -> Doc:
    (deployment,) = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and any(c["name"] == "gateway" for c in d["spec"]["template"]["spec"]["containers"])
    ]
    return deployment


def config_path(gateway: Doc) -> str:
    """`--config` in args, else $GATEWAY_CONFIG from the container, else the image's."""
    args = gateway.get("args", [])
    if "--config" in args:
        return str(args[args.index("--config") + 1])
    for entry in gateway.get("env", []):
        if entry["name"] == "GATEWAY_CONFIG":
            return str(entry["value"])
    (image_default,) = re.findall(r"GATEWAY_CONFIG=(\S+)", " ".join(FINAL.args("ENV")))
    return str(image_default)


def volume_files(docs: list[Doc], volume: Doc, secret_value: str) -> dict[str, str]:
    """The files a volume shows: every key, or only its items under their paths."""
    if "configMap" in volume:
        source, spec = find(docs, "ConfigMap", volume["configMap"]["name"]), volume["configMap"]
        data = dict(source.get("data") or {})
    elif "secret" in volume:
        source, spec = find(docs, "Secret", volume["secret"]["secretName"]), volume["secret"]
        data = dict.fromkeys(secret_keys(source), secret_value)
    else:
        return {}  # emptyDir and the like: empty at start
    items = spec.get("items")
    if not items:
        return data
    missing = [i["key"] for i in items if i["key"] not in data]
    assert not missing, f"volume {volume['name']}: items name missing keys {missing}"
    return {item["path"]: data[item["key"]] for item in items}


def lay_out(
    docs: list[Doc], pod: Doc, container: Doc, root: Path, secret_value: str = TEST_VALUE
) -> dict[str, str]:
    """Write `container`'s volume mounts under `root`, and return them as the pod sees
    them: path -> text. In the files written, absolute paths under a mount point are moved
    under `root` too, as if `root` were `/`."""
    seen: dict[str, str] = {}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = container.get("volumeMounts", [])
    points = sorted((m["mountPath"].rstrip("/") for m in mounts), key=len, reverse=True)
    under_a_mount = r"(?<![\w/.-])(" + "|".join(map(re.escape, points)) + ")/"
    for mount in mounts:
        assert mount["name"] in volumes, f"volumeMount {mount['name']!r} has no volume"
        files = volume_files(docs, volumes[mount["name"]], secret_value)
        if "subPath" in mount:
            files = {"": files[mount["subPath"]]}
        target = root / mount["mountPath"].lstrip("/")
        for name, text in files.items():
            seen[f"{mount['mountPath'].rstrip('/')}/{name}" if name else mount["mountPath"]] = text
            path = target / name if name else target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(re.sub(under_a_mount, lambda m: f"{root}{m.group(1)}/", text))
        target.mkdir(parents=True, exist_ok=True)
    return seen


def container_env(docs: list[Doc], container: Doc, secret_value: str) -> dict[str, str]:
    env = {}
    for entry in container.get("env", []):
        source = entry.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["key"] in secret_keys(find(docs, "Secret", ref["name"])), ref
            env[entry["name"]] = secret_value
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[entry["name"]] = find(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            env[entry["name"]] = str(entry.get("value", ""))
    return env


def _switch_store(docs: list[Doc], variant: str) -> None:
    """The Sentinel and Cluster variants: the config's store: line replaced by the one its
    comment gives for them, as docs/deployment.md tells the reader to do."""
    scheme = HA_STORES.get(variant)
    if scheme is None:
        return
    for doc in docs:
        text = doc.get("data", {}).get("config.yaml") if doc["kind"] == "ConfigMap" else None
        if text:
            (line,) = re.findall(rf"^# (store: {re.escape(scheme)}://\S+)$", text, re.M)
            doc["data"]["config.yaml"] = re.sub(r"^store: .*$", line, text, count=1, flags=re.M)


def deploy(
    variant: str, root: Path, monkeypatch: pytest.MonkeyPatch, secret_value: str = TEST_VALUE
) -> Deployed:
    docs = documents(variant)
    _switch_store(docs, variant)
    deployment = gateway_deployment(docs)
    pod = deployment["spec"]["template"]["spec"]
    (gateway,) = [c for c in pod["containers"] if c["name"] == "gateway"]
    apps = [c for c in pod["containers"] if c["name"] != "gateway"]
    files = lay_out(docs, pod, gateway, root, secret_value)
    assert config_path(gateway) in files, "the config file is not on a mounted volume"
    raw = yaml.safe_load(files[config_path(gateway)])
    # only what the container gets: nothing from the environment running the tests
    for name in env_names(raw):
        monkeypatch.delenv(name, raising=False)
    for name, value in container_env(docs, gateway, secret_value).items():
        monkeypatch.setenv(name, value)
    config = load(root / config_path(gateway).lstrip("/"))
    return Deployed(docs, deployment, pod, gateway, apps, files, raw, config)


@pytest.fixture(params=sorted(VARIANTS))
def deployed(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployed]:
    yield deploy(request.param, tmp_path / "pod", monkeypatch)


def security(pod: Doc, container: Doc) -> dict[str, Any]:
    """The container's effective securityContext: its own settings over the pod's."""
    return {**pod.get("securityContext", {}), **container.get("securityContext", {})}


# -- the manifests as a whole -----------------------------------------------------------


def test_every_manifest_file_is_a_checked_variant_of_valid_documents() -> None:
    files = {p.name for p in K8S.glob("*.y*ml")}
    assert files == {name for names in VARIANTS.values() for name in names}
    for variant in VARIANTS:
        docs = documents(variant)
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        kinds_names = [(d["kind"], d["metadata"]["name"]) for d in docs]
        assert len(kinds_names) == len(set(kinds_names)), f"{variant}: a name used twice"
        pods = [
            d["spec"]["template"]["metadata"]["labels"]
            for d in docs
            if d["kind"] in ("Deployment", "StatefulSet")
        ]
        for doc in docs:
            if doc["kind"] == "Deployment":
                labels = doc["spec"]["template"]["metadata"]["labels"]
                assert selects(doc["spec"]["selector"]["matchLabels"], labels), kinds_names
            elif doc["kind"] in ("Service", "PodDisruptionBudget"):
                selector = doc["spec"]["selector"]
                selector = selector.get("matchLabels", selector)  # a PDB's is a LabelSelector
                assert any(selects(selector, labels) for labels in pods), doc["metadata"]


# -- the gateway pod against its config -------------------------------------------------


def test_the_config_loads_from_the_mounted_files(deployed: Deployed) -> None:
    """The fixture loaded it (gateway.config.load); the users file came along."""
    assert deployed.config.source.name == Path(config_path(deployed.gateway)).name
    assert deployed.config.login.users is not None and deployed.config.login.users.users


def test_container_ports_are_the_gateways_listeners(deployed: Deployed) -> None:
    config = deployed.config
    ports = {p["containerPort"] for p in deployed.gateway["ports"]}
    assert ports == {config.listen.port, config.admin_listen.port}
    # the Service reaches listen and the kubelet reaches admin_listen on the pod's IP
    assert config.listen.host not in LOOPBACK
    assert config.admin_listen.host not in LOOPBACK


def test_probes_ask_healthz_and_readyz_on_the_admin_port(deployed: Deployed) -> None:
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        check = deployed.gateway[probe]["httpGet"]
        assert check["path"] == path, probe
        port = port_number(deployed.gateway, check["port"])
        assert port == deployed.config.admin_listen.port, probe
    annotations = deployed.deployment["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/port" in annotations:
        assert int(annotations["prometheus.io/port"]) == deployed.config.admin_listen.port
        assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"


def test_service_targets_the_gateway_listen_port_never_the_app(deployed: Deployed) -> None:
    labels = deployed.deployment["spec"]["template"]["metadata"]["labels"]
    services = [
        d
        for d in deployed.docs
        if d["kind"] == "Service" and selects(d["spec"]["selector"], labels)
    ]
    assert services, "no Service selects the gateway's pods"
    app_ports = {p["containerPort"] for c in deployed.apps for p in c.get("ports", [])}
    for service in services:
        for port in service["spec"]["ports"]:
            target = port_number(deployed.gateway, port.get("targetPort", port["port"]))
            assert target == deployed.config.listen.port
            assert target not in app_ports


def test_env_vars_the_config_names_come_from_secrets(deployed: Deployed) -> None:
    for name in env_names(deployed.raw):
        ref = deployed.env_source(name).get("valueFrom", {}).get("secretKeyRef")
        assert ref, f"{name}: a secret belongs in a Secret, not in a plain env value"
        assert ref["key"] in secret_keys(find(deployed.docs, "Secret", ref["name"]))


def test_files_the_config_names_are_mounted(deployed: Deployed) -> None:
    refs = [("--config", config_path(deployed.gateway)), *deployed.file_references()]
    mounts = deployed.gateway["volumeMounts"]
    for key, path in refs:
        # absolute: relative paths resolve against the ConfigMap's ..<timestamp> directory
        assert path.startswith("/"), f"{key}: {path}"
        (mount,) = [m for m in mounts if path.startswith(m["mountPath"].rstrip("/") + "/")]
        assert path in deployed.files, f"{key}: {path} is not mounted"
        # a subPath mount never sees an update of its ConfigMap or Secret
        assert "subPath" not in mount, f"{key}: subPath mount"
        assert mount.get("readOnly") is True, f"{key}: mounted writable"


def test_mounted_secret_files_are_readable_by_the_gateway_user(deployed: Deployed) -> None:
    context = security(deployed.pod, deployed.gateway)
    volumes = {v["name"]: v for v in deployed.pod["volumes"]}
    for mount in deployed.gateway["volumeMounts"]:
        spec = volumes[mount["name"]].get("secret") or volumes[mount["name"]].get("configMap")
        if spec is None:
            continue
        for mode in [spec.get("defaultMode", 0o644)] + [
            i["mode"] for i in spec.get("items", []) if "mode" in i
        ]:
            # the files belong to root and, with fsGroup, to that group
            group_ok = mode & 0o040 and context.get("fsGroup") == context.get("runAsGroup")
            assert mode & 0o004 or group_ok, f"{mount['name']}: mode {mode:o} unreadable"


def test_upstream_is_the_app_container_on_loopback(deployed: Deployed) -> None:
    upstream = deployed.config.upstream
    assert upstream is not None, "a sidecar proxies to its app"
    assert upstream.host in LOOPBACK, "a sidecar's app is in the same pod"
    app_ports = {p["containerPort"] for c in deployed.apps for p in c.get("ports", [])}
    assert upstream.port in app_ports


def test_pods_run_as_non_root_with_a_read_only_root_filesystem(deployed: Deployed) -> None:
    (image_user,) = FINAL.args("USER")[-1:]
    gateway = security(deployed.pod, deployed.gateway)
    assert gateway.get("runAsUser") == int(image_user.split(":")[0])
    for deployment in [d for d in deployed.docs if d["kind"] == "Deployment"]:
        pod = deployment["spec"]["template"]["spec"]
        assert pod.get("automountServiceAccountToken") is False
        for container in pod["containers"]:
            context = security(pod, container)
            where = f"{deployment['metadata']['name']}/{container['name']}"
            assert context.get("runAsNonRoot") is True, where
            assert context.get("runAsUser", 0) != 0, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert "ALL" in context.get("capabilities", {}).get("drop", []), where


def test_tmp_is_a_writable_empty_dir(deployed: Deployed) -> None:
    """$TMPDIR: workers > 1 keep their metrics there, and the root filesystem is read-only."""
    volumes = {v["name"]: v for v in deployed.pod["volumes"]}
    (tmp,) = [m for m in deployed.gateway["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]] and not tmp.get("readOnly")


def test_every_container_has_requests_and_limits(deployed: Deployed) -> None:
    for deployment in [d for d in deployed.docs if d["kind"] == "Deployment"]:
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= resources.get("requests", {}).keys(), container["name"]
            assert {"cpu", "memory"} <= resources.get("limits", {}).keys(), container["name"]


def test_shutdown_drains_within_the_grace_period(deployed: Deployed) -> None:
    drain = deployed.config.drain_timeout
    pre_stop = pre_stop_seconds(deployed.gateway)
    assert pre_stop > 0, "no preStop sleep: endpoints would still send to a draining pod"
    assert deployed.pod["terminationGracePeriodSeconds"] > pre_stop + drain
    for app in deployed.apps:
        # the app keeps answering until the gateway has finished its in-flight requests
        assert pre_stop_seconds(app) >= pre_stop + drain, app["name"]


def test_placeholder_signing_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Secrets ship a placeholder too short for HS256: a forgotten one fails closed."""
    for variant in VARIANTS:
        docs = documents(variant)
        for secret in [d for d in docs if d["kind"] == "Secret"]:
            values = {**(secret.get("stringData") or {})}
            assert values and all(v == PLACEHOLDER for v in values.values()), secret
        with pytest.raises(ConfigError) as caught:
            deploy(variant, tmp_path / variant, monkeypatch, secret_value=PLACEHOLDER)
        keys = {problem.key for problem in caught.value.problems}
        assert keys <= {"tokens.secret_env", "tokens.secret_file"}, caught.value


# -- replicas ---------------------------------------------------------------------------


def test_more_than_one_process_shares_a_redis(deployed: Deployed) -> None:
    replicas = deployed.deployment["spec"].get("replicas", 1)
    if deployed.config.store.scheme == "memory":
        assert replicas == 1 and deployed.config.workers == 1, "memory:// is one process"
    else:
        assert replicas > 1


def test_the_redis_store_is_a_service_of_the_manifests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployed = deploy("replicas-redis", tmp_path, monkeypatch)
    store = deployed.config.store
    assert store.scheme in ("redis", "rediss") and store.host is not None
    service = find(deployed.docs, "Service", store.host.split(".")[0])  # name[.namespace...]
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == (store.port or 6379)]
    (redis,) = [
        d
        for d in deployed.docs
        if d["kind"] == "Deployment"
        and selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
    ]
    (server,) = redis["spec"]["template"]["spec"]["containers"]
    assert port_number(server, port.get("targetPort", port["port"])) == 6379
    # the gateway and the Redis server take the password from the same Secret key
    ref = deployed.env_source(deployed.raw["store_password_env"])["valueFrom"]["secretKeyRef"]
    server_refs = [e.get("valueFrom", {}).get("secretKeyRef") for e in server.get("env", [])]
    assert ref in server_refs
    assert "--requirepass" in server.get("args", [])


@pytest.mark.parametrize("variant", sorted(HA_STORES))
def test_the_ha_store_names_pods_of_the_manifests(
    variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each host of the Sentinel or Cluster URL is a pod of the StatefulSet, by its headless
    Service, and the gateway's password is the Secret key every Redis container reads."""
    deployed = deploy(variant, tmp_path, monkeypatch)
    topology = from_url(deployed.config.store)
    assert deployed.config.store.scheme == HA_STORES[variant] and len(topology.nodes) >= 3
    ref = deployed.env_source(deployed.raw["store_password_env"])["valueFrom"]["secretKeyRef"]
    for host, port in topology.nodes:
        pod_name, service_name = host.split(".")[:2]
        service = find(deployed.docs, "Service", service_name)
        assert service["spec"].get("clusterIP") == "None", "per-pod names need a headless Service"
        assert port in [p["port"] for p in service["spec"]["ports"]]
        stateful_set = find(deployed.docs, "StatefulSet", pod_name.rsplit("-", 1)[0])
        assert stateful_set["spec"]["serviceName"] == service_name
        assert int(pod_name.rsplit("-", 1)[1]) < stateful_set["spec"]["replicas"]
        template = stateful_set["spec"]["template"]
        assert selects(service["spec"]["selector"], template["metadata"]["labels"])
        for container in template["spec"]["containers"]:
            refs = [e.get("valueFrom", {}).get("secretKeyRef") for e in container.get("env", [])]
            assert ref in refs, container["name"]
