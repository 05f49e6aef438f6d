"""`roomfit train`: learn a product's adapter from its photos, without the service.

Registered by cli/main.py as `app.command()(train)`. Defaults come from the same settings as the
service (`ROOMFIT_BASE_MODEL`, `ROOMFIT_DETECTOR`, `ROOMFIT_DEVICE`, `ROOMFIT_DTYPE`,
`ROOMFIT_TRAIN_STEPS`, `ROOMFIT_LORA_RANK`; the steps follow the model trained, `--base-model` when
given), and the training's from `models.training.TrainSettings` (the paper's values) or, with
`--domain`, `models.domain_training.DOMAIN_SETTINGS` (every weight at lr 1e-6).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from cli.arguments import check_out_file, finite, write_whole
from cli.engine import BaseModelOption, InitUnetOption, load_cli_base

if TYPE_CHECKING:
    from models.detector import PhotoAnnotation
    from models.training import TrainProgress


def train(
    photos: Annotated[
        list[Path],
        typer.Argument(
            help="Product photos (1-8; two or more recommended); with --domain, folders of scene photos.",
            exists=True,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the adapter (.safetensors).")],
    # alike: typer options are declarative, one per flag; their shapes repeat by design.
    label: Annotated[
        str | None, typer.Option(help="What the product is (couch, bed, chair ...): the detector's hint.")
    ] = None,
    boxes: Annotated[
        str | None,
        # "\\[" : typer's rich help would read [x0,...] as markup and drop it
        typer.Option(help="JSON list, one per photo: \\[x0,y0,x1,y1] in pixels, or null to detect."),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            min=1, help="Training steps (default ROOMFIT_TRAIN_STEPS, else the base model's: tiny 20, 400)."
        ),
    ] = None,
    rank: Annotated[int | None, typer.Option(min=1, help="LoRA rank (default ROOMFIT_LORA_RANK).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same photos and seed give the same adapter.")] = 0,
    # The training defaults below are None here and TrainSettings' (models/training.py) or
    # DOMAIN_SETTINGS' (models/domain_training.py) in the run: importing those here would make every
    # `roomfit` command load torch (~10 s). tests/models/test_training_runs.py checks the help's
    # numbers against them.
    lr: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            callback=finite,
            help="AdamW learning rate (default: the paper's: 3e-5; 1e-6 with --domain).",
        ),
    ] = None,
    # alike: one typer option per training setting; declarations share their shape, nothing else.
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Training pairs per step (default: the paper's 16).")
    ] = None,
    micro_batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Pairs per forward pass; the step's gradients add up, so the result is the same "
            "(default: the whole batch). Lower it when memory runs out.",
        ),
    ] = None,
    dropout: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, callback=finite, help="LoRA dropout (default: the paper's 0.2)."),
    ] = None,
    reference_dropout: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            callback=finite,
            help="Share of pairs trained on the unconditional reference, so guidance works "
            "(default: Paint-by-Example's 0.2).",
        ),
    ] = None,
    lora_init: Annotated[
        Literal["gaussian", "kaiming"] | None,
        typer.Option(help="LoRA A's init, B = 0 (default: gaussian, the LoRA paper's; kaiming: peft's)."),
    ] = None,
    full: Annotated[
        bool | None,
        typer.Option(
            help="Update every UNet weight instead of LoRA (large file). Default: --full with --domain "
            "(the paper pretrains all weights), LoRA for products."
        ),
    ] = None,
    domain: Annotated[
        bool, typer.Option(help="Domain pretraining: PHOTOS are scene photos, masked at random boxes.")
    ] = False,
    threshold: Annotated[
        float, typer.Option(min=0.0, max=1.0, callback=finite, help="Lowest detection score kept.")
    ] = 0.5,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(help="Checkpoint folder: a killed run started again resumes from it.", file_okay=False),
    ] = None,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Steps between checkpoints.")] = 50,
    base_model: BaseModelOption = None,
    detector: Annotated[
        str | None,
        typer.Option(help="DETR: facebook/detr-resnet-50, folder or tiny (default ROOMFIT_DETECTOR)."),
    ] = None,
    init_unet: InitUnetOption = None,
) -> None:
    """Learn a product's adapter from its photos: find it (DETR), build augmented pairs, fine-tune."""
    from core.boxes import InvalidBoxes, parse_boxes
    from core.settings import get_settings
    from models.detector import load_detector
    from models.domain_training import DOMAIN_SETTINGS, scene_files, train_domain
    from models.errors import RoomfitModelError
    from models.images import open_image
    from models.subject_training import annotate_and_train
    from models.training import TrainSettings

    check_out_file(out)  # before the training, not when writing its result
    settings = get_settings()
    model_name = base_model or settings.base_model
    if model_name == "tiny":
        typer.echo("roomfit: base model is `tiny` (random weights): the adapter paints noise", err=True)
    n_steps = steps or settings.train_steps_for(model_name)
    chosen = {  # the options given; the others keep the settings' defaults
        "learning_rate": lr,
        "batch_size": batch_size,
        "micro_batch_size": micro_batch,
        "lora_dropout": dropout,
        "reference_dropout": reference_dropout,
        "lora_init": lora_init,
        "mode": None if full is None else "full" if full else "lora",
    }
    train_settings = dataclasses.replace(
        DOMAIN_SETTINGS if domain else TrainSettings(),
        **{name: value for name, value in chosen.items() if value is not None},
        steps=n_steps,
        rank=rank or settings.lora_rank,
        seed=seed,
        checkpoint_every=checkpoint_every if checkpoint_dir is not None else 0,
    )
    bar = _StepBar(n_steps)
    try:
        if domain:
            files = scene_files(photos)  # read one at a time while training, never all at once
            typer.echo(f"domain training on {len(files)} photos", err=True)
        else:
            images = [open_image(p, f"photo {p.name}") for p in photos]
            try:
                given = parse_boxes(boxes, [image.size for image in images])
            except InvalidBoxes as exc:
                raise typer.BadParameter(str(exc), param_hint="--boxes") from exc
        base = load_cli_base(model_name, init_unet, shared=False)  # training changes it: its own
        if domain:
            bar.open()
            result = train_domain(base, files, train_settings, progress=bar, checkpoint_dir=checkpoint_dir)
        else:

            def annotated(annotations: list[PhotoAnnotation]) -> None:
                for a in annotations:
                    typer.echo(f"{a.name}: {_describe_annotation(a)}", err=True)
                bar.open()

            result = annotate_and_train(
                base,
                images,
                train_settings,
                boxes=given,
                detector=lambda: load_detector(detector or settings.detector, device=settings.device),
                label=label,
                threshold=threshold,
                names=[p.name for p in photos],
                on_annotated=annotated,
                progress=bar,
                checkpoint_dir=checkpoint_dir,
                info={"label": label} if label else None,
            ).result
        bar.finish()
    except (RoomfitModelError, ValueError) as exc:
        code = getattr(exc, "code", "invalid_argument")
        typer.echo(json.dumps({"error": code, "detail": str(exc)}), err=True)
        raise typer.Exit(2) from exc
    finally:
        bar.close()

    write_whole(out, result.artifact)  # never half an adapter, nor a good one overwritten by half
    typer.echo(summary_text(result.summary.as_dict(), out))


class _StepBar:
    """tqdm over the training steps, opened once annotation has printed its lines."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    def open(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc="training", unit="step")

    def __call__(self, p: TrainProgress) -> None:
        self.bar.update(p.step - self.bar.n)
        self.bar.set_postfix(loss=f"{p.loss:.4f}")

    def finish(self) -> None:
        self.bar.update(self.total - self.bar.n)  # a resumed run starts part-way

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _describe_annotation(a: PhotoAnnotation) -> str:
    if a.box is None:
        return f"unusable: {a.reason}"
    found = f"{a.source} box {[round(v) for v in a.box]}"
    return found + (f" {a.label} {a.score:.2f}" if a.score else "")


def summary_text(summary: dict[str, Any], out: Path) -> str:
    s = summary
    resumed = f", resumed at step {s['resumed_from_step']}" if s["resumed_from_step"] else ""
    return (
        f"{out}\n"
        f"  mode {s['mode']}, {s['steps']} steps{resumed}, final loss {s['final_loss']:.4f}\n"
        f"  trainable parameters {s['trainable_params']:,} = {s['trainable_fraction']:.3%} "
        f"of the UNet's {s['unet_params']:,}\n"
        f"  {'adapter' if s['mode'] == 'lora' else 'weights file'} {s['artifact_bytes']:,} bytes\n"
        f"  time {s['seconds']:.1f} s on {s['device']}"
    )
