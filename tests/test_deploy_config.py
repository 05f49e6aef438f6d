"""docker-compose and the Kubernetes manifests can't be run here (no container engine), but they can
be held to the code: every setting they set exists, every command they run is a roomfit command,
every queue they consume or scale on is one the app declares, and the numbers that must agree
(grace periods, the broker KEDA reads, the models fetched, the API's memory) do.
Their validity against the specifications' schemas is tests/test_deploy_schemas.py's part.

The helpers here (a YAML loader that knows Compose's `!reset`/`!override`, Compose's merge, the
`kustomize build` this repository needs) are shared with tests/test_deploy_schemas.py."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from typer.main import get_command

from cli.main import app as roomfit_app
from core.queue import QUEUES
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
K8S = ROOT / "deploy" / "k8s"
FILES = [COMPOSE, COMPOSE_CPU, *sorted(K8S.rglob("*.yaml"))]
SETTINGS = {f"ROOMFIT_{name.upper()}" for name in Settings.model_fields}
COMMANDS = set(get_command(roomfit_app).commands)  # type: ignore[attr-defined]
# A stopping worker gets this long past its own grace to hand its job back before SIGKILL.
HAND_BACK_SECONDS = 15
METRICS_ENV, METRICS_PORT = "ROOMFIT_WORKER_METRICS_PORT", 9808  # deploy/prometheus/scrape.yaml's
GRACE = "ROOMFIT_SHUTDOWN_GRACE_SECONDS"
EXPECTED_GRACE = {"train": 60, "preview": 30, "webhooks,default": 30}


# --- reading the files ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Override:
    """A value tagged `!override` in a Compose file: it replaces, never merges."""

    value: Any


class _Reset:
    """A value tagged `!reset`: the attribute is removed."""


RESET = _Reset()


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus the two tags of the Compose Specification's merge rules."""


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Override:
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", lambda _loader, _node: RESET)
ComposeLoader.add_constructor("!override", _override)


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=ComposeLoader) if doc]


def plain(node: Any) -> Any:
    """A file's model alone, as Compose reads it before a merge: `!reset` dropped, `!override` unwrapped."""
    if isinstance(node, Override):
        return plain(node.value)
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items() if v is not RESET}
    if isinstance(node, list):
        return [plain(v) for v in node if v is not RESET]
    return node


# Compose merges sequences by appending, except these, which the later file replaces.
_REPLACED_SEQUENCES = frozenset({"command", "entrypoint", "test"})


def compose_merge(base: Any, override: Any, key: str = "") -> Any:
    """Compose's "Merge and override": mappings merge key by key, sequences append (shell commands are
    replaced), scalars are replaced, `!reset` removes and `!override` replaces whole. (The uniqueness
    rules for ports, volumes and the like are left out: no override here touches them.)"""
    if isinstance(override, Override):
        return plain(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            if value is RESET:
                merged.pop(name, None)
            else:
                merged[name] = compose_merge(base[name], value, name) if name in base else plain(value)
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACED_SEQUENCES:
        return base + plain(override)
    return plain(override)


def compose_models() -> dict[str, dict[str, Any]]:
    """docker-compose.yml alone, and merged with docker-compose.cpu.yml, as `docker compose` sees them."""
    [base] = load_all(COMPOSE)
    [cpu] = load_all(COMPOSE_CPU)
    return {"gpu": plain(base), "cpu": compose_merge(base, cpu)}


KUSTOMIZE_FIELDS = frozenset({"apiVersion", "kind", "namespace", "resources"})
CLUSTER_SCOPED = frozenset({"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"})


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def kustomize_build(folder: Path) -> list[dict[str, Any]]:
    """`kustomize build folder` for what this repository uses of it: `resources` (files, or folders
    with their own kustomization) and `namespace`, set on every namespaced object."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - KUSTOMIZE_FIELDS
    assert not unknown, f"{folder}: this renderer does not implement {sorted(unknown)}"
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        path = folder / resource
        docs += kustomize_build(path) if path.is_dir() else load_all(path)
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED and "namespace" in kustomization:
            doc["metadata"]["namespace"] = kustomization["namespace"]
    ids = [(d["apiVersion"].split("/")[0], d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(ids) == len(set(ids)), f"{folder}: kustomize refuses two objects with one id: {ids}"
    return docs


def k8s_objects() -> list[dict[str, Any]]:
    """Every object of every kustomization (deploy/k8s and deploy/k8s/models)."""
    return [doc for folder in kustomizations() for doc in kustomize_build(folder.parent)]


def walk(node: Any) -> Iterator[Any]:
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from walk(child)


def load_script(name: str) -> ModuleType:
    """A script of deploy/ as a module (deploy/ is no package)."""
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", ROOT / "deploy" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the code's names ----------------------------------------------------------------------------
def test_the_files_exist_and_parse() -> None:
    assert len(FILES) >= 10
    assert sum(len(load_all(path)) for path in FILES) >= 25


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_only_real_settings_are_set(path: Path) -> None:
    for doc in load_all(path):
        for node in walk(plain(doc)):
            names = list(node) if isinstance(node, dict) else []
            if isinstance(node, dict) and isinstance(node.get("name"), str):  # Kubernetes env: {name, value}
                names.append(node["name"])
            for key in names:
                if isinstance(key, str) and key.startswith("ROOMFIT_"):
                    assert key in SETTINGS, f"{path.name}: {key} is not a roomfit setting"


def _commands() -> Iterator[tuple[str, list[str]]]:
    for path in FILES:
        for doc in load_all(path):
            for node in walk(plain(doc)):
                if isinstance(node, dict) and isinstance(node.get("command"), list):
                    yield path.name, node["command"]


def test_commands_and_queues_are_real() -> None:
    seen_queues: set[str] = set()
    for name, command in _commands():
        if command[0] == "roomfit":
            assert command[1] in COMMANDS, f"{name}: roomfit {command[1]} does not exist"
            if command[1] == "worker":
                queues = command[command.index("--queues") + 1].split(",")
                assert set(queues) <= set(QUEUES), f"{name}: unknown queue in {queues}"
                seen_queues.update(queues)
    for doc in k8s_objects():
        for node in walk(doc):
            if (
                isinstance(node, dict)
                and node.get("type") == "redis"
                and "listName" in node.get("metadata", {})
            ):
                assert node["metadata"]["listName"] in QUEUES, f"KEDA scales on an unknown queue: {node}"
    assert seen_queues == set(QUEUES), "every queue needs a worker pool in the manifests"


# --- compose -------------------------------------------------------------------------------------
def _compose() -> dict[str, Any]:
    return compose_models()["gpu"]


def test_compose_ships_no_working_credentials() -> None:
    """Every password, secret or access key comes from the env file and stops compose when unset
    (`${NAME:?…}`); none is written in the file."""
    credential_words = ("PASSWORD", "SECRET", "ACCESS_KEY", "ROOT_USER", "DATABASE_URL")
    found = []
    for model in compose_models().values():
        for node in walk(model):
            if isinstance(node, dict):
                for key, value in node.items():
                    if isinstance(key, str) and any(w in key for w in credential_words):
                        found.append(key)
                        assert isinstance(value, str) and "${" in value and ":?" in value, f"{key}: {value!r}"
    assert len(found) >= 6, found  # the postgres, minio and roomfit credentials were all seen
    example = (ROOT / "deploy" / "compose.env.example").read_text()
    for name in ("POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "FLOWER_BASIC_AUTH"):
        assert f"\n{name}=\n" in example, f"{name} is listed, empty, in the example env file"
    variables = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    listed = set(re.findall(r"^(\w+)=", example, re.M))
    assert variables <= listed, (
        f"compose reads variables the example env file does not list: {variables - listed}"
    )


def test_flower_needs_a_password_and_listens_on_this_host_only() -> None:
    flower = _compose()["services"]["flower"]
    assert any(arg.startswith("--basic-auth=${") for arg in flower["command"])
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])


def _role(command: list[str]) -> str:
    """What a container runs: `api`, `worker`, `migrate`, `flower`, `fetch-models` or `other`."""
    if command[:2] == ["roomfit", "serve"]:
        return "api"
    if command[:2] in (["roomfit", "worker"], ["roomfit", "migrate"]):
        return command[1]
    if command[:1] == ["celery"] and "flower" in command:
        return "flower"
    if command[:3] == ["roomfit", "models", "fetch"]:
        return "fetch-models"
    return "other"


IMAGE_OF_ROLE = {
    "api": "api",
    "migrate": "api",
    "worker": "worker",
    "flower": "worker",
    "fetch-models": "worker",
}


def test_each_process_runs_from_its_image() -> None:
    """The API and the migration run from the torch-free API image, workers, Flower and the model
    download from the worker image; every roomfit service builds from one of the two Dockerfiles."""
    seen = set()
    for model in compose_models().values():
        for name, service in model["services"].items():
            if "command" in service and _role(service["command"]) != "other":
                role = _role(service["command"])
                kind = IMAGE_OF_ROLE[role]
                assert service["image"] == f"roomfit-{kind}:latest", name
                assert service["build"]["dockerfile"] == f"deploy/Dockerfile.{kind}", name
                seen.add(role)
    for doc in k8s_objects():
        for node in walk(doc):
            if isinstance(node, dict) and "image" in node and "command" in node:
                role = _role(node["command"])
                assert node["image"].startswith(f"roomfit-{IMAGE_OF_ROLE[role]}:"), node
                seen.add(role)
    assert seen == set(IMAGE_OF_ROLE)
    for kind in ("api", "worker"):
        assert (ROOT / "deploy" / f"Dockerfile.{kind}").is_file()
    assert not (ROOT / "deploy" / "Dockerfile").exists(), "one Dockerfile per image now"


def test_no_page_names_the_old_single_dockerfile() -> None:
    pages = [
        ROOT / "README.md",
        ROOT / "SECURITY.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "tests").glob("*.py"),
    ]
    for page in (p for p in pages if p != Path(__file__).resolve()):
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"deploy/Dockerfile(?![.\w])", text), f"{page.name} names deploy/Dockerfile"


def test_the_cpu_override_only_drops_the_gpu() -> None:
    models = compose_models()
    gpu, cpu = models["gpu"]["services"], models["cpu"]["services"]
    assert set(gpu) == set(cpu)
    gpu_pools = {name for name, service in gpu.items() if "devices" in str(service.get("deploy", ""))}
    assert gpu_pools == {"worker-train", "worker-preview"}
    for name in gpu_pools:
        assert "deploy" not in cpu[name], f"{name} still reserves a GPU"
        assert cpu[name]["environment"]["ROOMFIT_DEVICE"] == "cpu"
        assert cpu[name]["command"] == gpu[name]["command"]
        base_env = gpu[name]["environment"]
        assert {k: v for k, v in cpu[name]["environment"].items() if k in base_env} == base_env
    for name in set(gpu) - gpu_pools:
        assert cpu[name] == gpu[name], f"the CPU override changed {name}"


# --- graceful stop -------------------------------------------------------------------------------
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def go_duration(text: str) -> timedelta:
    """A Compose duration (Go's time.ParseDuration without a sign): `75s`, `1m15s`, `1.5h`."""
    assert text == "0" or re.fullmatch(f"(?:{_DURATION.pattern})+", text), f"not a duration: {text!r}"
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(text)))


def test_go_durations() -> None:
    assert go_duration("75s") == go_duration("1m15s") == timedelta(seconds=75)
    assert go_duration("1.5h") == timedelta(minutes=90)
    for bad in ("75", "75 s", "s", "1d"):
        with pytest.raises(AssertionError):
            go_duration(bad)


def test_the_shutdown_grace_is_a_setting() -> None:
    assert GRACE in SETTINGS, f"{GRACE} (core.settings.Settings.shutdown_grace_seconds) does not exist yet"


def _worker_deployments() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for doc in k8s_objects():
        if doc["kind"] == "Deployment":
            [container] = doc["spec"]["template"]["spec"]["containers"]
            if container["command"][:2] == ["roomfit", "worker"]:
                found.append((container["command"][3], doc))
    return found


def test_kubernetes_waits_for_each_worker_to_hand_back() -> None:
    """Every worker Deployment sets its grace explicitly, and Kubernetes waits that plus the
    hand-back time before SIGKILL."""
    deployments = _worker_deployments()
    assert {queues for queues, _ in deployments} == set(EXPECTED_GRACE)
    for queues, deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get(GRACE) == str(EXPECTED_GRACE[queues]), f"{queues}: {GRACE} must be set explicitly"
        assert pod["terminationGracePeriodSeconds"] == int(env[GRACE]) + HAND_BACK_SECONDS, queues


def test_compose_waits_for_each_worker_to_hand_back() -> None:
    for variant, model in compose_models().items():
        workers = {
            name: s
            for name, s in model["services"].items()
            if s.get("command", [])[:2] == ["roomfit", "worker"]
        }
        assert {s["command"][3] for s in workers.values()} == set(EXPECTED_GRACE)
        for name, service in workers.items():
            grace = service["environment"].get(GRACE)
            assert grace == str(EXPECTED_GRACE[service["command"][3]]), f"{variant} {name}: {GRACE}"
            stop = go_duration(service["stop_grace_period"])
            assert stop == timedelta(seconds=int(grace) + HAND_BACK_SECONDS), f"{variant} {name}"


# --- Kubernetes: scaling, budgets, memory --------------------------------------------------------
def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in k8s_objects() if doc["kind"] == kind]


def test_every_deployment_has_one_autoscaler_a_budget_and_no_replica_count() -> None:
    """The HPA or KEDA owns each Deployment's count, so none states `replicas` (an apply would reset
    it); a PodDisruptionBudget selects each Deployment's pods."""
    targets = [hpa["spec"]["scaleTargetRef"]["name"] for hpa in _by_kind("HorizontalPodAutoscaler")]
    targets += [so["spec"]["scaleTargetRef"]["name"] for so in _by_kind("ScaledObject")]
    budgets = [pdb["spec"]["selector"]["matchLabels"] for pdb in _by_kind("PodDisruptionBudget")]
    deployments = _by_kind("Deployment")
    assert len(deployments) == 4
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        assert targets.count(name) == 1, f"{name}: {targets.count(name)} autoscalers"
        assert "replicas" not in deployment["spec"], f"{name} states replicas"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert sum(all(labels.get(k) == v for k, v in b.items()) for b in budgets) == 1, name
    [api_hpa] = _by_kind("HorizontalPodAutoscaler")
    assert api_hpa["apiVersion"] == "autoscaling/v2"
    assert [m["resource"]["name"] for m in api_hpa["spec"]["metrics"]] == ["cpu"]
    [train] = [
        so for so in _by_kind("ScaledObject") if so["spec"]["scaleTargetRef"]["name"].endswith("-train")
    ]
    assert train["spec"]["minReplicaCount"] == 0, "training scales to zero"


def test_keda_reads_the_brokers_redis() -> None:
    """Each KEDA redis trigger reads the list in the broker's own Redis database."""
    [config] = [c for c in _by_kind("ConfigMap") if c["metadata"]["name"] == "roomfit-config"]
    broker = urlsplit(config["data"]["ROOMFIT_BROKER_URL"])
    triggers = [t for so in _by_kind("ScaledObject") for t in so["spec"]["triggers"]]
    assert {t["metadata"]["listName"] for t in triggers} == set(QUEUES)
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["address"] == f"{broker.hostname}:{broker.port}"
        assert meta["databaseIndex"] == (broker.path.strip("/") or "0")
    auth_names = {t["metadata"]["name"] for t in _by_kind("TriggerAuthentication")}
    assert {t["authenticationRef"]["name"] for t in triggers} <= auth_names


MIB = 1024**2
API_WARM_RSS = 107 * MIB  # BENCHMARKS.md, "API memory per request kind": warm RSS ~107 MiB
QUANTITY = {"Ki": 1024, "Mi": MIB, "Gi": 1024**3, "K": 1000, "M": 1000**2, "G": 1000**3, "": 1}


def quantity(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]i?)?", str(text)).groups()  # type: ignore[union-attr]
    return int(number) * QUANTITY[unit or ""]


def test_the_api_memory_limit_holds_its_budget() -> None:
    """The API's limit is above its warm size plus the image budget it is told (SECURITY.md)."""
    [api] = [d for d in _by_kind("Deployment") if d["metadata"]["name"] == "roomfit-api"]
    [container] = api["spec"]["template"]["spec"]["containers"]
    budget = int({e["name"]: e["value"] for e in container["env"]}["ROOMFIT_API_MEMORY_BUDGET_BYTES"])
    assert budget == Settings.model_fields["api_memory_budget_bytes"].default
    limit = quantity(container["resources"]["limits"]["memory"])
    assert limit >= API_WARM_RSS + budget + 64 * MIB, "no headroom over warm RSS + budget"
    probes = {container["livenessProbe"]["httpGet"]["path"], container["readinessProbe"]["httpGet"]["path"]}
    assert probes == {"/healthz", "/readyz"}


def test_gpu_pools_hold_one_gpu_and_the_weights_read_only() -> None:
    for queues, deployment in _worker_deployments():
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        if queues in ("train", "preview"):
            assert gpus == 1, queues
            assert mounts["/models"]["readOnly"] is True, queues
        else:
            assert gpus is None and "/models" not in mounts, queues
        assert pod["securityContext"]["runAsNonRoot"] is True


# --- network policies ----------------------------------------------------------------------------
def _pod_apps() -> set[str]:
    return {
        doc["spec"]["template"]["metadata"]["labels"]["app"]
        for doc in k8s_objects()
        if doc["kind"] in ("Deployment", "Job")
    }


def _selected(policy: dict[str, Any], apps: set[str]) -> set[str]:
    selector = policy["spec"]["podSelector"]
    if not selector:
        return set(apps)
    if "matchLabels" in selector:
        return {app for app in apps if selector["matchLabels"] == {"app": app}}
    [expression] = selector["matchExpressions"]
    assert (expression["key"], expression["operator"]) == ("app", "In")
    return apps & set(expression["values"])


def _egress_kind(rule: dict[str, Any]) -> str:
    """`internet` (a peer of 0.0.0.0/0 or ::/0), `dns` (port 53 only) or `services` (anything else)."""
    if any(peer.get("ipBlock", {}).get("cidr") in ("0.0.0.0/0", "::/0") for peer in rule.get("to", [])):
        return "internet"
    return "dns" if {port.get("port") for port in rule.get("ports", [])} == {53} else "services"


def _egress(policies: list[dict[str, Any]], apps: set[str]) -> dict[str, dict[str, set[Any]]]:
    """kind of egress -> app -> the ports it may reach so (None: every port)."""
    found: dict[str, dict[str, set[Any]]] = {"internet": {}, "dns": {}, "services": {}}
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            for app in _selected(policy, apps):
                ports = found[_egress_kind(rule)].setdefault(app, set())
                ports.update(port.get("port") for port in rule.get("ports", []))
    return found


def test_network_policies() -> None:
    """Default deny; only the API takes connections, and the workers Prometheus's on their metrics
    port; every roomfit pod reaches DNS, and those that
    use them the data services on their ports; only the webhooks pool (and the one-off model
    download) reaches the internet, public addresses only."""
    apps = _pod_apps()
    assert apps == {
        "roomfit-api",
        "roomfit-migrate",
        "roomfit-fetch-models",
        "roomfit-worker-train",
        "roomfit-worker-preview",
        "roomfit-worker-webhooks",
    }
    policies = _by_kind("NetworkPolicy")
    assert any(
        p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not {"ingress", "egress"} & set(p["spec"])
        for p in policies
    ), "a default deny of both directions"
    workers = {"roomfit-worker-train", "roomfit-worker-preview", "roomfit-worker-webhooks"}
    ingress: dict[str, list[dict[str, Any]]] = {}
    for policy in policies:
        for app in _selected(policy, apps):
            ingress.setdefault(app, []).extend(policy["spec"].get("ingress", []))
    assert {app for app, rules in ingress.items() if rules} == {"roomfit-api", *workers}
    assert ingress["roomfit-api"] == [{"ports": [{"protocol": "TCP", "port": 8000}]}]
    for app in workers:  # Prometheus's namespace, the metrics port, nothing else
        [rule] = ingress[app]
        assert rule["ports"] == [{"protocol": "TCP", "port": METRICS_PORT}], app
        assert [set(peer) for peer in rule["from"]] == [{"namespaceSelector"}], app
    egress = _egress(policies, apps)
    assert set(egress["internet"]) == {"roomfit-worker-webhooks", "roomfit-fetch-models"}
    assert set(egress["dns"]) == apps
    assert egress["services"] == {app: {5432, 6379, 443} for app in apps - {"roomfit-fetch-models"}}
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            if _egress_kind(rule) == "internet":
                for peer in rule["to"]:
                    closed = set(peer["ipBlock"]["except"])
                    assert {"10.0.0.0/8", "169.254.0.0/16"} <= closed or "fc00::/7" in closed, peer


def _scraped_worker_ports() -> set[int]:
    """The ports deploy/prometheus/scrape.yaml scrapes the workers on, compose and Kubernetes."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "scrape.yaml").read_text(encoding="utf-8"))
    ports = set()
    for job in config["scrape_configs"]:
        if "worker" in job["job_name"]:
            for static in job.get("static_configs", []):
                ports |= {int(target.rpartition(":")[2]) for target in static["targets"]}
            for relabel in job.get("relabel_configs", []):
                if relabel.get("target_label") == "__address__":
                    ports.add(int(relabel["replacement"].rpartition(":")[2]))
    return ports


def test_prometheus_reaches_every_worker_s_metrics() -> None:
    """Every worker, in compose and in Kubernetes, serves /metrics on the port the example scrape
    configuration names (a worker without ROOMFIT_WORKER_METRICS_PORT serves none), and declares it."""
    assert _scraped_worker_ports() == {METRICS_PORT}
    for variant, model in compose_models().items():
        for name, service in model["services"].items():
            if service.get("command", [])[:2] == ["roomfit", "worker"]:
                assert service["environment"].get(METRICS_ENV) == str(METRICS_PORT), f"{variant} {name}"
    deployments = _worker_deployments()
    assert len(deployments) == 3
    for queues, deployment in deployments:
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get(METRICS_ENV) == str(METRICS_PORT), queues
        assert {"name": "metrics", "containerPort": METRICS_PORT} in container.get("ports", []), queues


# --- the model download --------------------------------------------------------------------------
def _pinned_revisions() -> dict[str, str]:
    """models/model_fetch.py's PINNED (what `roomfit models fetch` takes), read without importing it."""
    tree = ast.parse((ROOT / "models" / "model_fetch.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "PINNED":
            return ast.literal_eval(node.value)  # type: ignore[arg-type]
    raise AssertionError("models/model_fetch.py has no PINNED")


def _detector_revision() -> str:
    """The revision roomfit looks for first (models/detector.py's DETECTOR), read without importing it."""
    tree = ast.parse((ROOT / "models" / "detector.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == ["DETECTOR"]:
            [revisions] = [k.value for k in node.value.keywords if k.arg == "revisions"]  # type: ignore[attr-defined]
            return ast.literal_eval(revisions)[0]
    raise AssertionError("models/detector.py has no DETECTOR")


def test_the_download_fetches_the_models_roomfit_loads() -> None:
    """compose's fetch-models and the Kubernetes Job run one command, and it downloads the models the
    workers are configured with, the detector at the revision roomfit looks for first."""
    service = _compose()["services"]["fetch-models"]
    [job] = [j for j in _by_kind("Job") if j["metadata"]["name"] == "roomfit-fetch-models"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == service["command"]
    [config] = [c for c in _by_kind("ConfigMap") if c["metadata"]["name"] == "roomfit-config"]
    env = _compose()["services"]["worker-preview"]["environment"]
    for name in ("ROOMFIT_BASE_MODEL", "ROOMFIT_DETECTOR"):
        assert env[name] == config["data"][name]
    base, detector = config["data"]["ROOMFIT_BASE_MODEL"], config["data"]["ROOMFIT_DETECTOR"]
    assert service["command"] == ["roomfit", "models", "fetch", "--base", base, "--detector", detector]
    # `roomfit models fetch` takes the detector at the revision roomfit looks for first.
    assert _pinned_revisions()[detector] == _detector_revision()
    assert service["profiles"] == ["models"], "fetch-models runs only when asked for"
    assert "ro" not in service["volumes"][0].split(":")[2:], "the download writes the volume"
    workers = [
        s for s in _compose()["services"].values() if s.get("command", [])[:2] == ["roomfit", "worker"]
    ]
    assert all(v.endswith(":/models:ro") for s in workers for v in s.get("volumes", []) if "/models" in v)


# --- the images' scripts -------------------------------------------------------------------------
def test_the_api_image_leaves_out_only_the_machine_learning() -> None:
    api_requirements = load_script("api_requirements")
    pyproject = ROOT / "pyproject.toml"
    all_names = {
        api_requirements.requirement_name(d)
        for d in tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    }
    assert all_names >= api_requirements.WORKER_ONLY, "WORKER_ONLY names a package roomfit does not depend on"
    kept = {api_requirements.requirement_name(d) for d in api_requirements.api_requirements(pyproject)}
    assert kept == all_names - api_requirements.WORKER_ONLY
    assert {"fastapi", "uvicorn", "sqlalchemy", "alembic", "celery", "boto3", "pillow"} <= kept


def test_the_api_and_the_migration_run_without_the_machine_learning(tmp_path: Path) -> None:
    """What the API image runs, `roomfit migrate` and `roomfit serve`'s app, in a process where torch,
    diffusers and the other packages the API image leaves out cannot be imported."""
    blocked = sorted(load_script("api_requirements").WORKER_ONLY)
    script = textwrap.dedent(
        f"""
        import importlib.machinery, importlib.util, sys
        BLOCKED = {blocked!r}

        class Without(importlib.machinery.PathFinder):
            @classmethod
            def find_spec(cls, name, path=None, target=None):
                if name.partition(".")[0] in BLOCKED:
                    return None  # as if not installed
                return super().find_spec(name, path, target)

        sys.meta_path[:] = [Without if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
        assert importlib.util.find_spec("torch") is None
        from typer.testing import CliRunner
        from cli.main import app
        result = CliRunner().invoke(app, ["migrate"])
        assert result.exit_code == 0, result.output
        from fastapi.testclient import TestClient
        from api.app import create_app
        client = TestClient(create_app())
        for path in ("/healthz", "/readyz", "/openapi.json", "/widget.js"):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text)
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("ok")
        """
    )
    env = {"PATH": "/usr/bin:/bin", "ROOMFIT_VAR_DIR": str(tmp_path / "var"), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_the_worker_healthcheck(embedded_env: Settings) -> None:
    """Healthy when a worker of this host answers a ping, or when a job of this host runs with a
    fresh heartbeat (a solo pool answers no ping while it works); a failing check counts as no."""
    from core.clock import utcnow
    from core.db import session_scope
    from core.migrate import upgrade
    from core.tables import Job, Tenant

    check = load_script("worker_healthcheck")
    upgrade(embedded_env.resolved_database_url)
    now = utcnow()
    lease = timedelta(seconds=embedded_env.lease_seconds)
    with session_scope() as session:
        session.add(Tenant(id="ten_1", name="shop"))
        session.flush()
        for job_id, worker, status, beat in (
            ("job_fresh", "gpu-a:7", "running", now - lease / 3),
            ("job_stale", "gpu-b:7", "running", now - 2 * lease),
            ("job_done", "gpu-c:7", "succeeded", now),
        ):
            session.add(
                Job(
                    id=job_id,
                    tenant_id="ten_1",
                    kind="train",
                    status=status,
                    worker=worker,
                    heartbeat_at=beat,
                )
            )
    assert check.busy_here("gpu-a", now=now)
    assert not check.busy_here("gpu-b", now=now), "a stale heartbeat is a dead worker"
    assert not check.busy_here("gpu-c", now=now), "a finished job shows nothing"
    assert not check.busy_here("gpu", now=now), "host names match whole"

    def fails(_host: str) -> bool:
        raise ConnectionError("broker down")

    assert check.healthy("h", checks=(lambda _h: False, lambda _h: True))
    assert check.healthy("h", checks=(fails, lambda _h: True))
    assert not check.healthy("h", checks=(fails, lambda _h: False))
