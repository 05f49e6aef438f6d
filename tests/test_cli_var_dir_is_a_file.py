"""A ROOMFIT_VAR_DIR naming a file is a settings mistake, said in one line (exit 2) by the
commands that make the state folder, `roomfit migrate` and `roomfit up`. Before, both ended in an
`internal_error` (FileExistsError), while `roomfit tenants list` told the user to run `migrate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from core.settings import Settings, get_settings


@pytest.mark.parametrize("args", [["migrate"], ["up", "--port", "8123"]])
def test_a_var_dir_that_is_a_file(
    args: list[str], embedded_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state.txt"
    state.write_text("not a folder")
    monkeypatch.setenv("ROOMFIT_VAR_DIR", str(state))
    get_settings.cache_clear()
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    error = json.loads(line)
    assert error["error"] == "invalid_settings" and error["detail"].startswith("ROOMFIT_VAR_DIR=")
    assert state.read_text() == "not a folder"
