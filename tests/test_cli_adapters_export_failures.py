"""`roomfit adapters export`'s failures, each one line with the documented exit code.

- A write that fails part-way (a full disk; here a file-size limit) left half a .safetensors file
  in place of the previous one and ended in an `internal_error`; now the previous file stays whole,
  no temporary file is left, and the failure is one `cannot_write` line.
- `--out` naming a folder ended in an `internal_error` (IsADirectoryError).
- `--prefix` takes what its help lists, transformer | unet | none; any other word wrote a file
  neither diffusers' default loader nor `roomfit adapters import` reads, and exited 0.
- A subject id with a database that does not answer was `adapter_not_found`, exit 2, "(e3q8)";
  README: a database that is unreachable is exit 1, one not migrated says to run `roomfit migrate`.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from cli.main import app
from core.settings import Settings, get_settings
from models.adapter_format import write_adapter
from models.lora import LORA_TARGETS, LoraSpec

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 16 * 1024  # bytes a process may write to one file below; the export is about 66 KB


@pytest.fixture
def adapter(embedded_env: Settings, tmp_path: Path) -> Path:
    """A valid roomfit adapter file (export reads it; no base model needed) of about 66 KB."""
    generator = torch.Generator().manual_seed(0)
    layer = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    lora = {
        f"{layer}.lora_A.weight": torch.randn((4, 4096), generator=generator),
        f"{layer}.lora_B.weight": torch.randn((4096, 4), generator=generator),
    }
    data = write_adapter(
        lora,
        reference_embedding=torch.randn((1, 32), generator=generator),
        base_model_id="tiny",
        base_weights_hash="0" * 64,
        spec=LoraSpec(rank=4, alpha=4.0, targets=LORA_TARGETS),
    )
    path = tmp_path / "adapter.safetensors"
    path.write_bytes(data)
    return path


def one_error(result: Result, exit_code: int) -> dict[str, str]:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == exit_code, result.output
    [line] = [line for line in result.stderr.splitlines() if line.startswith('{"error"')]
    return json.loads(line)


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))  # past it, write() fails (EFBIG)


def test_a_write_that_fails_part_way_leaves_the_previous_file_whole(adapter: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported" / "lora.safetensors"
    out.parent.mkdir()
    out.write_bytes(b"the previous export")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ROOMFIT_VAR_DIR": str(tmp_path / "var")}
    command = [sys.executable, "-m", "cli.main", "adapters", "export", str(adapter), "--out", str(out)]
    run = functools.partial(subprocess.run, command, cwd=tmp_path, env=env, capture_output=True, text=True)
    done = run(timeout=120, preexec_fn=_limit_file_size)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert json.loads(line)["error"] == "cannot_write" and str(out) in line
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in out.parent.iterdir()) == ["lora.safetensors"]  # no temporary left
    # without the limit, the same command writes the whole file over the previous one
    again = run(timeout=120)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["bytes"] == out.stat().st_size > LIMIT


def test_out_that_is_a_folder(adapter: Path, tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    result = CliRunner().invoke(app, ["adapters", "export", str(adapter), "--out", str(folder)])
    assert result.exit_code == 2 and "--out" in result.output, (result.output, result.exception)


def test_a_prefix_outside_the_three_is_refused(adapter: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.safetensors"
    args = ["adapters", "export", str(adapter), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--prefix", "trasformer"])
    assert result.exit_code == 2 and "--prefix" in result.output, (result.output, result.exception)
    assert not out.exists()
    for prefix in ("transformer", "unet", "none"):
        assert CliRunner().invoke(app, [*args, "--prefix", prefix]).exit_code == 0, prefix


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_subject_with_an_unreachable_database(embedded_env: Settings, monkeypatch) -> None:
    url = f"postgresql+psycopg://shop:s3cret@127.0.0.1:{closed_port()}/roomfit"
    monkeypatch.setenv("ROOMFIT_DATABASE_URL", url)
    get_settings.cache_clear()
    error = one_error(CliRunner().invoke(app, ["adapters", "export", "sub_x", "--out", "x.safetensors"]), 1)
    assert error["error"] == "database_unavailable" and "s3cret" not in error["detail"]


def test_a_subject_with_a_database_not_migrated(embedded_env: Settings) -> None:
    error = one_error(CliRunner().invoke(app, ["adapters", "export", "sub_x", "--out", "x.safetensors"]), 2)
    assert error["error"] == "not_migrated" and "roomfit migrate" in error["detail"]
    assert CliRunner().invoke(app, ["migrate"]).exit_code == 0
    error = one_error(CliRunner().invoke(app, ["adapters", "export", "sub_x", "--out", "x.safetensors"]), 2)
    assert error["error"] == "adapter_not_found" and "no subject 'sub_x'" in error["detail"]
