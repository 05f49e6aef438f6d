"""`roomfit eval` given a file where it needs a folder says so in one JSON line (exit 2),
instead of a traceback (FileExistsError / NotADirectoryError, an `internal_error` for the console)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

TINY = ["--base-model", "tiny", "--dino-model", "tiny", "--clip-model", "tiny", "--inception-model", "tiny"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from core.settings import get_settings

    monkeypatch.setenv("ROOMFIT_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("ROOMFIT_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ROOMFIT_DEVICE", "cpu")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _error(args: list[str]) -> dict[str, str]:
    result = CliRunner().invoke(app, ["eval", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith('{"error"')]
    return json.loads(line)


def test_out_that_is_a_file(env: Path) -> None:
    bench = env / "bench"
    assert CliRunner().invoke(app, ["eval", "--make-synthetic", str(bench)]).exit_code == 0
    out = env / "report"
    out.write_text("a file, not a folder")
    error = _error([str(bench), "--out", str(out), *TINY, "--steps", "1", "--methods", "baseline"])
    assert error["error"] == "invalid_argument" and "report" in error["detail"]
    assert out.read_text() == "a file, not a folder"


def test_make_synthetic_into_a_file(env: Path) -> None:
    target = env / "bench"
    target.write_text("x")
    error = _error(["--make-synthetic", str(target)])
    assert error["error"] == "invalid_bench" and "not a folder" in error["detail"]
