"""docker-compose and the Kubernetes manifests can't be run here (no container engine), but they can
be held to the code: every setting they set exists, every command they run is a roomfit command,
and every queue they consume or scale on is one the app declares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from cli.main import app
from core.queue import QUEUES
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "docker-compose.yml", *sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))]
SETTINGS = {f"ROOMFIT_{name.upper()}" for name in Settings.model_fields}
COMMANDS = set(get_command(app).commands)  # type: ignore[attr-defined]


def _documents() -> list[tuple[Path, Any]]:
    return [(path, doc) for path in FILES for doc in yaml.safe_load_all(path.read_text()) if doc]


def _walk(node: Any) -> list[Any]:
    found = [node]
    if isinstance(node, dict):
        for value in node.values():
            found += _walk(value)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value)
    return found


def test_the_files_exist_and_parse() -> None:
    assert len(FILES) >= 6
    assert len(_documents()) >= 10


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_only_real_settings_are_set(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        for node in _walk(doc):
            if isinstance(node, dict):
                for key in node:
                    if isinstance(key, str) and key.startswith("ROOMFIT_"):
                        assert key in SETTINGS, f"{path.name}: {key} is not a roomfit setting"


def test_commands_and_queues_are_real() -> None:
    seen_queues: set[str] = set()
    for path, doc in _documents():
        for node in _walk(doc):
            if isinstance(node, dict) and isinstance(node.get("command"), list):
                command = node["command"]
                if command[0] == "roomfit":
                    assert command[1] in COMMANDS, f"{path.name}: roomfit {command[1]} does not exist"
                    if command[1] == "worker":
                        queues = command[command.index("--queues") + 1].split(",")
                        assert set(queues) <= set(QUEUES), f"{path.name}: unknown queue in {queues}"
                        seen_queues.update(queues)
            if (
                isinstance(node, dict)
                and node.get("type") == "redis"
                and "listName" in node.get("metadata", {})
            ):
                assert node["metadata"]["listName"] in QUEUES, f"{path.name}: KEDA scales on an unknown queue"
    assert seen_queues == set(QUEUES), "every queue needs a worker pool in the manifests"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_ships_no_working_credentials() -> None:
    """Every password, secret or access key comes from the env file and stops compose when unset
    (`${NAME:?…}`); none is written in the file."""
    credential_words = ("PASSWORD", "SECRET", "ACCESS_KEY", "ROOT_USER", "DATABASE_URL")
    found = []
    for node in _walk(_compose()):
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and any(w in key for w in credential_words):
                    found.append(key)
                    assert isinstance(value, str) and "${" in value and ":?" in value, f"{key}: {value!r}"
    assert len(found) >= 6, found  # the postgres, minio and roomfit credentials were all seen
    example = (ROOT / "deploy" / "compose.env.example").read_text()
    for name in ("POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "FLOWER_BASIC_AUTH"):
        assert f"\n{name}=\n" in example, f"{name} is listed, empty, in the example env file"


def test_flower_needs_a_password_and_listens_on_this_host_only() -> None:
    flower = _compose()["services"]["flower"]
    assert any(arg.startswith("--basic-auth=${") for arg in flower["command"])
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
