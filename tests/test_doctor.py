"""`roomfit doctor`: every check reported, each on its own, failures named, within its timeout."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.doctor import Check, _start_bounded
from cli.main import app
from core.settings import Settings, get_settings
from tests.test_cli_errors import _raising, closed_port, error_line

runner = CliRunner()
TINY_METRICS = ["--dino-model", "tiny", "--clip-model", "tiny", "--inception-model", "tiny"]
NAMES = [
    *("settings", "base_model", "detector", "dino", "clip", "inception"),
    *("device", "versions", "database", "broker", "blob_store"),
]


@pytest.fixture(scope="module", autouse=True)
def _engine_imported() -> None:
    """torch and diffusers imported before any test times the doctor: seconds, paid once."""
    import models  # noqa: F401


@pytest.fixture
def fresh(embedded_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ROOMFIT_DEVICE", "cpu")
    get_settings.cache_clear()
    return get_settings()


def setenv(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"ROOMFIT_{name}", value)
    get_settings.cache_clear()


def doctor(*args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["doctor", "--json", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, json.loads(result.stdout)


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {name: check["status"] for name, check in report["checks"].items()}


def test_everything_ok_with_tiny_models(fresh: Settings) -> None:
    code, report = doctor(*TINY_METRICS)  # before `roomfit migrate`
    assert (code, report["status"], statuses(report)["database"]) == (1, "fail", "fail")
    assert "roomfit migrate" in report["checks"]["database"]["detail"]

    assert runner.invoke(app, ["migrate"]).exit_code == 0
    code, report = doctor("--load", *TINY_METRICS)
    assert (code, report["status"]) == (0, "ok"), report
    # `tiny` base model and detector warn (random weights); everything else is simply fine
    expected = {name: "ok" for name in NAMES} | {"base_model": "warn", "detector": "warn"}
    assert statuses(report) == expected
    assert list(report["checks"]) == NAMES
    base = report["checks"]["base_model"]
    assert len(base["info"]["weights_hash"]) == 64 and base["info"]["load_seconds"] >= 0
    assert "random weights" in base["detail"]
    assert report["checks"]["database"]["info"]["revision"] in report["checks"]["database"]["info"]["heads"]
    assert report["checks"]["device"]["info"]["device"] == "cpu"
    assert {"torch", "diffusers", "transformers", "peft"} <= set(report["checks"]["versions"]["info"])

    # Without --load, the folders --load built are looked at: every file their loaders read is there.
    code, again = doctor(*TINY_METRICS)
    assert (code, statuses(again)) == (0, expected)
    assert str(fresh.resolved_models_dir / "tiny-pbe") in again["checks"]["base_model"]["detail"]
    assert "first use" not in again["checks"]["base_model"]["detail"]


def test_failures_are_named_and_the_other_checks_still_run(
    fresh: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port = closed_port()
    setenv(
        monkeypatch,
        BASE_MODEL=str(tmp_path / "nowhere"),
        DATABASE_URL=f"postgresql+psycopg://shop:s3cret@127.0.0.1:{port}/roomfit",
        BROKER_URL=f"redis://127.0.0.1:{port}/0",
        BLOB_URL="s3://previews",
        S3_ENDPOINT_URL=f"http://127.0.0.1:{port}",
    )
    started = time.monotonic()
    code, report = doctor(*TINY_METRICS, "--timeout", "3")
    elapsed = time.monotonic() - started
    assert code == 1 and report["status"] == "fail"
    assert list(report["checks"]) == NAMES
    failed = {name for name, status in statuses(report).items() if status == "fail"}
    assert failed == {"base_model", "database", "broker", "blob_store"}, report
    checks = report["checks"]
    assert "ROOMFIT_BASE_MODEL" in checks["base_model"]["detail"]
    assert "refused" in checks["database"]["detail"].lower() and "s3cret" not in json.dumps(report)
    assert elapsed < 10, elapsed  # the three services answer (or are cut off) together, within 3 s


def test_a_model_folder_without_weights_fails(
    fresh: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from models import ensure_tiny_model

    folder = ensure_tiny_model(tmp_path / "pbe")
    setenv(monkeypatch, BASE_MODEL=str(folder))
    assert statuses(doctor(*TINY_METRICS)[1])["base_model"] == "ok"  # a complete folder, not `tiny`
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (folder / "scheduler" / "scheduler_config.json").unlink()
    code, report = doctor(*TINY_METRICS)
    base = report["checks"]["base_model"]
    assert code == 1 and base["status"] == "fail"
    # named as find_model_folder names them (models/model_fetch.py's layouts), the setting too
    assert "ROOMFIT_BASE_MODEL" in base["detail"] and "unet/diffusion_pytorch_model" in base["detail"]
    assert "scheduler/scheduler_config.json" in base["detail"] and "vae/" not in base["detail"]


def test_metric_models_fail_only_when_named(fresh: Settings, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-dino")
    _, report = doctor("--dino-model", missing, "--clip-model", "tiny", "--inception-model", "tiny")
    assert statuses(report)["dino"] == "fail" and missing in report["checks"]["dino"]["detail"]
    # not named: the defaults (real models) may be absent here; that warns, it never fails
    _, report = doctor()
    assert all(statuses(report)[kind] in ("ok", "warn") for kind in ("dino", "clip", "inception"))


def test_the_screen_has_one_line_per_check(fresh: Settings) -> None:
    result = runner.invoke(app, ["doctor", *TINY_METRICS])
    lines = result.stdout.splitlines()
    assert result.exit_code == 1  # not migrated
    assert [line.split()[1] for line in lines[:-1]] == NAMES
    assert [line.split()[0] for line in lines[:-1]].count("fail") == 1
    assert lines[-1].startswith("roomfit doctor: ") and "1 failed" in lines[-1]


def test_a_probe_that_hangs_is_cut_off() -> None:
    def slow() -> Check:
        time.sleep(5)
        return Check("slow", "ok", "too late")

    started = time.monotonic()
    checks = _start_bounded({"slow": slow, "fast": lambda: Check("fast", "ok", "here")}, 0.3)()
    assert time.monotonic() - started < 2
    assert [(c.name, c.status) for c in checks] == [("slow", "fail"), ("fast", "ok")]
    assert checks[0].detail == "no answer within 0.3 s"


def test_a_cuda_device_is_checked(fresh: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    setenv(monkeypatch, DEVICE="cuda")
    _, report = doctor(*TINY_METRICS)
    device = report["checks"]["device"]
    if torch.cuda.is_available():
        assert device["status"] == "ok" and "GiB free of" in device["detail"], device
        assert 0 < device["info"]["memory_free"] <= device["info"]["memory_total"]
        assert device["info"]["dtype"] == "float16"
    else:
        assert device["status"] == "fail" and "CUDA is not available" in device["detail"]
        assert statuses(report)["versions"] == "ok"


def test_a_missing_model_under_any_command_is_one_line(fresh: Settings) -> None:
    from models.errors import ModelNotFoundError

    demo = _raising(ModelNotFoundError("ROOMFIT_BASE_MODEL='org/name' is not in the local cache"))
    error = error_line(runner.invoke(demo, ["boom"]), 2)
    assert error == {
        "error": "model_not_found",
        "detail": "ROOMFIT_BASE_MODEL='org/name' is not in the local cache",
    }
