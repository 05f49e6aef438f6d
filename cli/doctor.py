"""`roomfit doctor`: one screen saying whether this machine and these settings can run roomfit.

Registered by cli/main.py as `app.command()(doctor)`. Each check is independent (a failing one never
stops the others) and says `ok`, `warn` or `fail`:

- settings: embedded or distributed, and where state lives;
- models: the base model, detector and the three metric models (DINO, CLIP-I, FID's Inception),
  found as the workers and `roomfit eval` find them (`models.model_folder.find_model_folder`, which
  never downloads and checks that a folder holds every file its loader reads). `--load` loads each
  for real on the configured device (the real base model takes a while and several GB; `tiny`
  presets are built on the way); without it a `tiny` preset not built yet is not built. The metric
  models serve only `roomfit eval`: a missing one warns unless named with its flag. `tiny` base
  model and detector warn too: their weights are random;
- device and dtype (`ROOMFIT_DEVICE`, `ROOMFIT_DTYPE`), the GPU's name and free memory under CUDA;
- the versions of torch, diffusers, transformers, peft, accelerate and safetensors;
- database (reachable and migrated), broker and blob store, asked at once, each within `--timeout`.

Exit code 0 when nothing failed (warnings allowed), 1 when something did. `--json` prints
`{"status": "ok" | "fail", "checks": {name: {"status", "detail", "info"}}}`.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import typer

from cli.arguments import finite
from cli.errors import database_report, one_line, redact
from core.settings import Settings, get_settings

if TYPE_CHECKING:
    from models.model_folder import ModelSetting

Status = Literal["ok", "warn", "fail"]
MODEL_CHECKS = ("base_model", "detector", "dino", "clip", "inception")
PACKAGES = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors")
GIB = 1024**3


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    info: dict[str, Any] = field(default_factory=dict)


def _model_option(what: str) -> Any:
    return typer.Option(help=f"{what} to check (as `roomfit eval` takes it); named, a missing one fails.")


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as one JSON document.")] = False,
    load: Annotated[
        bool, typer.Option("--load", help="Load every model for real on the configured device (slow).")
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.1, max=60.0, callback=finite, help="Seconds the database, broker and blob store may take."
        ),
    ] = 5.0,
    dino_model: Annotated[str | None, _model_option("DINO")] = None,
    clip_model: Annotated[str | None, _model_option("CLIP for CLIP-I")] = None,
    inception_model: Annotated[str | None, _model_option("FID's Inception")] = None,
) -> None:
    """Check settings, models, device, versions, database, broker and blob store; exit 1 if one fails."""
    settings = get_settings()
    # The services are asked first, in threads, so their waits overlap the model checks.
    services = _start_bounded(
        {
            "database": lambda: _database_check(settings, timeout),
            "broker": lambda: _broker_check(settings),
            "blob_store": lambda: _blob_check(settings),
        },
        timeout,
    )
    checks = [_settings_check(settings)]
    metric_names = {"dino": dino_model, "clip": clip_model, "inception": inception_model}
    try:
        probes = _model_probes(settings, metric_names, load)
    except Exception as exc:  # the engine does not even import (a broken torch): every model says so
        probes = {name: partial(_reraise, exc) for name in MODEL_CHECKS}
    checks += [_guarded(name, probe) for name, probe in probes.items()]
    checks += [_guarded("device", lambda: _device_check(settings)), _guarded("versions", _versions_check)]
    checks += services()
    failed = any(check.status == "fail" for check in checks)
    if as_json:
        document = {
            "status": "fail" if failed else "ok",
            "checks": {c.name: {"status": c.status, "detail": c.detail, "info": c.info} for c in checks},
        }
        typer.echo(json.dumps(document, indent=2, default=str))
    else:
        for check in checks:
            typer.echo(f"{check.status:<4}  {check.name:<10}  {check.detail}")
        counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")}
        typer.echo(f"roomfit doctor: {counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed")
    if failed:
        raise typer.Exit(1)


def _reraise(exc: Exception) -> Check:
    raise exc


def _guarded(name: str, probe: Callable[[], Check]) -> Check:
    """`probe()`, or a failed check saying what it raised: one check's error never stops the rest."""
    try:
        return probe()
    except Exception as exc:
        return Check(name, "fail", one_line(f"{type(exc).__name__}: {exc}"))


def _start_bounded(probes: dict[str, Callable[[], Check]], timeout: float) -> Callable[[], list[Check]]:
    """Start every probe in its own daemon thread now; the returned function collects them, waiting
    until `timeout` seconds after the start at most. A probe still waiting then (a firewall that
    drops packets, an S3 client retrying) fails, and its thread is left behind: a daemon, it does
    not keep the process alive."""
    results: dict[str, Check] = {}
    threads = []
    for name, probe in probes.items():

        def run(name: str = name, probe: Callable[[], Check] = probe) -> None:
            results[name] = _guarded(name, probe)

        thread = threading.Thread(target=run, name=f"doctor-{name}", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + timeout

    def collect() -> list[Check]:
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        late = f"no answer within {timeout:g} s"
        return [results.get(name) or Check(name, "fail", late) for name in probes]

    return collect


# --- settings and models ------------------------------------------------------------------------


def _settings_check(settings: Settings) -> Check:
    mode = "embedded" if settings.embedded else "distributed"
    info = {
        "mode": mode,
        "var_dir": str(settings.var_dir.resolve()),
        "models_dir": str(settings.resolved_models_dir),
        "database_url": redact(settings.resolved_database_url),
        "broker_url": redact(settings.resolved_broker_url),
        "blob_url": settings.resolved_blob_url,
    }
    return Check("settings", "ok", f"{mode} mode, state under {info['var_dir']}", info)


# where the workers (worker/runtime.py) and `roomfit eval` build `tiny` presets, under models_dir
TINY_FOLDERS = {"base_model": "tiny-pbe", "detector": "tiny-detr"}


@dataclass(frozen=True)
class _Model:
    """One model to check: how its name becomes a path, what its loader reads there, how to load it."""

    name: str
    value: str  # what the setting or flag says: tiny, a folder, a HF id
    tiny_dir: Path
    locate: Callable[[], Path]  # the folder (or file) `value` stands for; ModelNotFoundError if none
    load: Callable[[], Any]
    required: bool = True
    tiny_note: str = ""  # why a `tiny` value is worth a warning, if it is


def _model_probes(
    settings: Settings, metric_names: dict[str, str | None], load: bool
) -> dict[str, Callable[[], Check]]:
    from models import base_model, detector
    from models import metric_models as mm
    from models.model_folder import find_model_folder

    root, device = settings.resolved_models_dir, settings.device

    def model(
        name: str, value: str, setting: ModelSetting, loader: Callable[..., Any], **args: Any
    ) -> _Model:
        tiny_dir = root / TINY_FOLDERS.get(name, f"tiny-{name}")
        return _Model(
            name,
            value,
            tiny_dir,
            lambda: find_model_folder(value, setting, tiny_dir),
            lambda: loader(value, device=device, tiny_dir=tiny_dir, **args),
        )

    base = model(
        "base_model",
        settings.base_model,
        base_model.BASE_MODEL,
        base_model.load_base_model,
        dtype=settings.dtype,
    )
    detr = model("detector", settings.detector, detector.DETECTOR, detector.load_detector)
    models = [
        replace(base, tiny_note="random weights: previews are noise"),
        replace(detr, tiny_note="random weights: it finds nothing real"),
    ]
    metrics = (
        ("dino", mm.DEFAULT_DINO, mm.DINO, mm.load_dino_model),
        ("clip", mm.DEFAULT_CLIP, mm.CLIP, mm.load_clip_model),
        ("inception", mm.DEFAULT_INCEPTION, mm.INCEPTION, mm.load_inception),
    )
    for kind, default, setting, loader in metrics:
        named = metric_names[kind]
        models.append(replace(model(kind, named or default, setting, loader), required=named is not None))
    # FID's Inception is one TorchScript file: the packaged default_1.pt, a .pt, or a folder's inception.pt
    fid = models[-1]
    models[-1] = replace(fid, locate=lambda: mm.inception_file(fid.value, fid.tiny_dir))
    return {m.name: (lambda m=m: _model_check(m, load)) for m in models}


def _model_check(model: _Model, load: bool) -> Check:
    import torch

    from models.errors import ModelNotFoundError

    info: dict[str, Any] = {"name": model.value}
    missing_status: Status = "fail" if model.required else "warn"
    if model.value == "tiny" and not load and not model.tiny_dir.exists():
        info["folder"] = str(model.tiny_dir)
        detail = f"tiny ({model.tiny_note or 'random weights'}); built on first use in {model.tiny_dir}"
        return Check(model.name, "warn" if model.tiny_note else "ok", detail, info)
    try:
        path = model.locate()
    except ModelNotFoundError as exc:
        return Check(model.name, missing_status, _needed_by(model, one_line(str(exc))), info)
    info["folder"] = str(path)
    detail = f"{model.value}: {path}"
    if load:
        started = time.perf_counter()
        try:
            loaded = model.load()
        except Exception as exc:
            detail = _needed_by(model, one_line(f"{model.value} does not load: {type(exc).__name__}: {exc}"))
            return Check(model.name, missing_status, detail, info)
        info["load_seconds"] = round(time.perf_counter() - started, 2)
        info["weights_hash"] = getattr(loaded, "weights_hash", None)
        del loaded
        gc.collect()  # before the next model loads: the real base model alone is several GB
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        detail += f" (loaded in {info['load_seconds']} s)"
    if model.value == "tiny" and model.tiny_note:
        return Check(model.name, "warn", f"{detail}; tiny: {model.tiny_note}", info)
    return Check(model.name, "ok", detail, info)


def _needed_by(model: _Model, detail: str) -> str:
    return detail if model.required else f"{detail} (needed only by `roomfit eval`)"


# --- device and versions ------------------------------------------------------------------------


def _device_check(settings: Settings) -> Check:
    import torch

    from models.base_model import resolve_device_dtype

    dev, dtype = resolve_device_dtype(settings.device, settings.dtype)
    dtype_name = str(dtype).removeprefix("torch.")
    info: dict[str, Any] = {
        "setting": settings.device,
        "device": str(dev),
        "dtype": dtype_name,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": torch.cuda.device_count(),
        "mps_available": torch.backends.mps.is_available(),
    }
    if dev.type == "cuda":
        return _cuda_check(dev, dtype, info)
    if dev.type == "mps" and not info["mps_available"]:
        return Check("device", "fail", f"ROOMFIT_DEVICE={settings.device}: MPS is not available here", info)
    detail = f"{dev}, {dtype_name}"
    if settings.device == "auto" and dev.type == "cpu":
        build = f"torch built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only torch"
        detail += f" (no CUDA device visible; {build})"
    if dev.type == "cpu" and dtype != torch.float32:
        return Check("device", "warn", f"{detail}: half precision on a CPU is slow", info)
    return Check("device", "ok", detail, info)


def _cuda_check(dev: Any, dtype: Any, info: dict[str, Any]) -> Check:
    import torch

    if not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return Check(
            "device", "fail", f"{dev}: CUDA is not available (torch {torch.__version__}, {build})", info
        )
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        return Check(
            "device", "fail", f"{dev}: only {torch.cuda.device_count()} CUDA device(s) visible", info
        )
    free, total = torch.cuda.mem_get_info(index)
    info.update(gpu=torch.cuda.get_device_name(index), memory_free=free, memory_total=total)
    detail = f"{dev} ({info['gpu']}), {info['dtype']}, {free / GIB:.1f} GiB free of {total / GIB:.1f} GiB"
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return Check("device", "fail", f"{detail}: this GPU has no bfloat16", info)
    return Check("device", "ok", detail, info)


def _versions_check() -> Check:
    import platform

    import torch

    versions: dict[str, Any] = {"python": platform.python_version(), "torch_cuda": torch.version.cuda}
    absent = []
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            absent.append(package)
    shown = ", ".join(f"{name} {versions[name]}" for name in PACKAGES if name in versions)
    if absent:
        return Check("versions", "fail", f"not installed: {', '.join(absent)}; {shown}", versions)
    return Check("versions", "ok", shown, versions)


# --- services -------------------------------------------------------------------------------------


def _database_check(settings: Settings, timeout: float) -> Check:
    report = database_report(settings.resolved_database_url, timeout)
    info = {"url": report.url, "revision": report.revision, "heads": list(report.heads)}
    if report.problem is not None:
        return Check("database", "fail", report.problem.detail, info)
    return Check("database", "ok", f"{report.url}: migrated (revision {report.revision})", info)


def _broker_check(settings: Settings) -> Check:
    if settings.embedded:
        # the filesystem transport is a folder: asked without making it, as the workers would
        return _folder_check("broker", "filesystem broker", settings.broker_folder)
    from core.queue import check_broker, make_celery

    return _answers(
        "broker", redact(settings.resolved_broker_url), lambda: check_broker(make_celery(settings))
    )


def _blob_check(settings: Settings) -> Check:
    url = settings.resolved_blob_url
    parts = urlsplit(url)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return _folder_check("blob_store", "blob folder", Path(unquote(parts.path)))
    from core.blobstore import blob_store_from_settings

    return _answers("blob_store", url, lambda: blob_store_from_settings(settings).ping())


def _answers(name: str, url: str, probe: Callable[[], object]) -> Check:
    """`probe()` as a check on the service at `url` (already without its password)."""
    try:
        probe()
    except Exception as exc:
        return Check(name, "fail", one_line(f"cannot use {url}: {type(exc).__name__}: {exc}"), {"url": url})
    return Check(name, "ok", f"{url} answers", {"url": url})


def _folder_check(name: str, what: str, folder: Path) -> Check:
    """A folder roomfit writes: fine when it is writable, or missing with a writable parent (made
    on first use); looked at without creating it, so the doctor leaves nothing behind."""
    info = {"folder": str(folder)}
    if folder.is_dir():
        if os.access(folder, os.W_OK | os.X_OK):
            return Check(name, "ok", f"{what} {folder}", info)
        return Check(name, "fail", f"{what} {folder} is not writable", info)
    parent = next(p for p in folder.absolute().parents if p.exists())
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return Check(name, "ok", f"{what} {folder} (made on first use)", info)
    return Check(name, "fail", f"{what} {folder} is missing and {parent} is not a writable folder", info)
