"""`roomfit train`: learn a product's adapter from its photos, without the service.

Registered by cli/main.py as `app.command()(train)`. Defaults come from the same settings as the
service (`ROOMFIT_BASE_MODEL`, `ROOMFIT_DETECTOR`, `ROOMFIT_DEVICE`, `ROOMFIT_DTYPE`,
`ROOMFIT_TRAIN_STEPS`, `ROOMFIT_LORA_RANK`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def parse_boxes(text: str | None, count: int) -> list[list[float] | None] | None:
    """`--boxes` as the API's `boxes` field: a JSON list, one `[x0,y0,x1,y1]` or null per photo."""
    if text is None:
        return None
    try:
        boxes = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--boxes is not JSON: {exc}") from exc
    if not isinstance(boxes, list) or len(boxes) != count:
        raise typer.BadParameter(f"--boxes must be a JSON list with one entry per photo ({count})")
    for box in boxes:
        if box is not None and not (
            isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)
        ):
            raise typer.BadParameter(f"--boxes entry {box!r} is neither [x0, y0, x1, y1] nor null")
    return boxes


def train(
    photos: Annotated[
        list[Path],
        typer.Argument(
            help="Product photos (2-8 is typical); with --domain, folders of scene photos.", exists=True
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the adapter (.safetensors).")],
    label: Annotated[
        str | None, typer.Option(help="What the product is (couch, bed, chair ...): the detector's hint.")
    ] = None,
    boxes: Annotated[
        str | None,
        # "\\[" : typer's rich help would read [x0,...] as markup and drop it
        typer.Option(help="JSON list, one per photo: \\[x0,y0,x1,y1] in pixels, or null to detect."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Training steps (default ROOMFIT_TRAIN_STEPS).")
    ] = None,
    rank: Annotated[int | None, typer.Option(min=1, help="LoRA rank (default ROOMFIT_LORA_RANK).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same photos and seed give the same adapter.")] = 0,
    lr: Annotated[float, typer.Option(help="AdamW learning rate (the paper's 3e-5).")] = 3e-5,
    batch_size: Annotated[int, typer.Option(min=1, help="Training pairs per step.")] = 4,
    dropout: Annotated[float, typer.Option(min=0.0, max=1.0, help="LoRA dropout.")] = 0.0,
    full: Annotated[
        bool, typer.Option(help="Update every UNet weight instead of LoRA (large file).")
    ] = False,
    domain: Annotated[
        bool, typer.Option(help="Domain pretraining: PHOTOS are scene photos, masked at random boxes.")
    ] = False,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Lowest detection score kept.")] = 0.5,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Checkpoint folder: a killed run started again resumes from it.")
    ] = None,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Steps between checkpoints.")] = 50,
    base_model: Annotated[
        str | None, typer.Option(help="Base model: HF id, folder or tiny (default ROOMFIT_BASE_MODEL).")
    ] = None,
    detector: Annotated[
        str | None,
        typer.Option(help="DETR: facebook/detr-resnet-50, folder or tiny (default ROOMFIT_DETECTOR)."),
    ] = None,
) -> None:
    """Learn a product's adapter from its photos: find it (DETR), build augmented pairs, fine-tune."""
    from tqdm import tqdm

    from core.settings import get_settings
    from models.base_model import load_base_model
    from models.detector import annotate_photos, load_detector
    from models.errors import RoomfitModelError
    from models.images import open_image
    from models.training import TrainProgress, TrainSettings, list_images, train_domain, train_subject
    from models.training_pairs import SubjectPhoto

    settings = get_settings()
    model_name = base_model or settings.base_model
    if model_name == "tiny":
        typer.echo("roomfit: base model is `tiny` (random weights): the adapter paints noise", err=True)
    n_steps = steps or settings.default_train_steps
    train_settings = TrainSettings(
        steps=n_steps,
        learning_rate=lr,
        batch_size=batch_size,
        mode="full" if full else "lora",
        rank=rank or settings.lora_rank,
        lora_dropout=dropout,
        seed=seed,
        checkpoint_every=checkpoint_every if checkpoint_dir is not None else 0,
    )
    try:
        if domain:
            files = [f for p in photos for f in (list_images(p) if p.is_dir() else [p])]
            images = [open_image(f, f"photo {f.name}") for f in files]
            typer.echo(f"domain training on {len(images)} photos", err=True)
        else:
            images = [open_image(p, f"photo {p.name}") for p in photos]
            given = parse_boxes(boxes, len(images))
            needs_detector = given is None or any(b is None for b in given)
            annotations = annotate_photos(
                images,
                detector=load_detector(detector or settings.detector, device=settings.device)
                if needs_detector
                else None,
                boxes=given,
                label=label,
                threshold=threshold,
                names=[p.name for p in photos],
            )
            for a in annotations:
                found = (
                    f"{a.source} box {[round(v) for v in a.box]}"
                    + (f" {a.label} {a.score:.2f}" if a.score else "")
                    if a.box is not None
                    else f"unusable: {a.reason}"
                )
                typer.echo(f"{a.name}: {found}", err=True)
        base = load_base_model(model_name, device=settings.device, dtype=settings.dtype)
        with tqdm(total=n_steps, desc="training", unit="step") as bar:

            def progress(p: TrainProgress) -> None:
                bar.update(p.step - bar.n)
                bar.set_postfix(loss=f"{p.loss:.4f}")

            if domain:
                result = train_domain(
                    base, images, train_settings, progress=progress, checkpoint_dir=checkpoint_dir
                )
            else:
                subject = [SubjectPhoto(images[a.index], a.box) for a in annotations if a.box is not None]
                result = train_subject(
                    base,
                    subject,
                    train_settings,
                    progress=progress,
                    checkpoint_dir=checkpoint_dir,
                    info={"label": label} if label else None,
                )
            bar.update(n_steps - bar.n)  # a resumed run starts part-way
    except (RoomfitModelError, ValueError) as exc:
        code = getattr(exc, "code", "invalid_argument")
        typer.echo(json.dumps({"error": code, "detail": str(exc)}), err=True)
        raise typer.Exit(2) from exc

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(result.artifact)
    typer.echo(summary_text(result.summary.as_dict(), out))


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
