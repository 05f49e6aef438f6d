"""`roomfit paint`: the inpainting engine from the command line, without the service.

Registered by cli/main.py as `app.command()(paint)`. Defaults come from the same settings as the
service (`ROOMFIT_BASE_MODEL`, `ROOMFIT_DEVICE`, `ROOMFIT_DTYPE`, `ROOMFIT_PREVIEW_STEPS`,
`ROOMFIT_LORA_RANK`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.arguments import check_out_file, finite, write_whole

if TYPE_CHECKING:
    from models import BaseModel


# The options `roomfit paint` and `roomfit train` share, declared once.
BaseModelOption = Annotated[
    str | None, typer.Option(help="Base model: HF id, folder or tiny (default ROOMFIT_BASE_MODEL).")
]
InitUnetOption = Annotated[
    Path | None,
    typer.Option(
        help="Start from a full fine-tune (e.g. `roomfit train --domain`'s output): the paper's chain, "
        "scene pretraining then a product. Train and paint an adapter with the same --init-unet.",
        exists=True,
        dir_okay=False,
    ),
]


# The API's range: below 1 is "off" as 1 is, and a negative scale would paint away from the product.
GuidanceOption = Annotated[
    float | None,
    typer.Option(
        min=0.0, max=20.0, callback=finite, help="Guidance scale, 0 to 20 (1 = off; default: the engine's)."
    ),
]


def load_cli_base(model_name: str, init_unet: Path | None, *, shared: bool) -> BaseModel:
    """The base model a command paints or trains with: the tiny folder the workers use (so the CLI
    and the service paint alike), started from `init_unet` when given. `shared`: the process's
    cached base (`get_base_model`); a base changed by --init-unet is always the command's own."""
    from core.settings import get_settings
    from models import get_base_model, load_base_model
    from models.full_weights_slot import start_from_unet_weights

    settings = get_settings()
    load = get_base_model if shared and init_unet is None else load_base_model
    base = load(
        model_name,
        device=settings.device,
        dtype=settings.dtype,
        tiny_dir=settings.resolved_models_dir / "tiny-pbe",
    )
    if init_unet is not None:
        start_from_unet_weights(base, init_unet.read_bytes())
    return base


def paint(
    # dir_okay=False: a folder given is said at once, not once the model has loaded
    room: Annotated[
        Path, typer.Option(help="Room photo (EXIF orientation is applied).", exists=True, dir_okay=False)
    ],
    mask: Annotated[
        Path,
        typer.Option(help="Mask image, room-sized: non-zero = paint here.", exists=True, dir_okay=False),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the result (format from the extension).")],
    reference: Annotated[
        Path | None,
        typer.Option(help="Product crop to paint (instead of --adapter).", exists=True, dir_okay=False),
    ] = None,
    adapter: Annotated[
        Path | None,
        typer.Option(
            help="A trained product's .safetensors file: a LoRA adapter or a full fine-tune (told apart "
            "by the file's format).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same inputs and seed give the same image.")] = 0,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Sampling steps (default ROOMFIT_PREVIEW_STEPS).")
    ] = None,
    guidance: GuidanceOption = None,
    scheduler: Annotated[str, typer.Option(help="ddim or dpmsolver++.")] = "ddim",
    base_model: BaseModelOption = None,
    init_unet: InitUnetOption = None,
) -> None:
    """Paint a product into a room photo: from a reference crop, or from a trained adapter or full
    fine-tune."""
    if (reference is None) == (adapter is None):
        raise typer.BadParameter("give exactly one of --reference and --adapter")
    out_format = _check_image_out(out)

    from tqdm import tqdm

    from core.settings import get_settings
    from models import (
        DEFAULT_GUIDANCE_SCALE,
        Painter,
        PaintRequest,
        RoomfitModelError,
        open_image,
        open_mask,
    )

    settings = get_settings()
    model_name = base_model or settings.base_model
    if model_name == "tiny":
        typer.echo(
            "roomfit: base model is `tiny` (random weights): the painted region will be noise", err=True
        )
    try:
        base = load_cli_base(model_name, init_unet, shared=True)
        painter = Painter(
            base,
            lora_rank=settings.lora_rank,
            # adapter ids are file paths here; the painter reads the format (roomfit-lora or -unet)
            loader=lambda path: Path(path).read_bytes(),
            scheduler=scheduler,
        )
        room_image = open_image(room, "room")
        request = PaintRequest(
            room=room_image,
            mask=open_mask(mask, room_image.size),
            seed=seed,
            reference=open_image(reference, "reference") if reference is not None else None,
        )
        n_steps = steps or settings.preview_steps_for(model_name)
        with tqdm(total=n_steps, desc="painting", unit="step") as bar:
            [image] = painter.paint(
                [request],
                adapter_id=str(adapter) if adapter is not None else None,
                steps=n_steps,
                guidance_scale=DEFAULT_GUIDANCE_SCALE if guidance is None else guidance,
                progress=lambda done, total: bar.update(done - bar.n),
            )
    except (RoomfitModelError, ValueError) as exc:
        code = getattr(exc, "code", "invalid_argument")
        typer.echo(json.dumps({"error": code, "detail": str(exc)}), err=True)
        raise typer.Exit(2) from exc
    write_whole(out, lambda path: image.save(path, format=out_format))
    typer.echo(str(out))


def _check_image_out(out: Path) -> str:
    """Refuse, before any painting, an --out that `Image.save` cannot write (its format is the
    suffix); return that format. A registered save handler is not enough: `.xbm` takes only 1-bit
    images and `.grib` / `.bufr` / `.h5` are stubs without one, so a 1-pixel RGB image (the mode
    painted) is written to memory first."""
    import io

    from PIL import Image

    check_out_file(out)
    out_format = Image.registered_extensions().get(out.suffix.lower())
    if out_format is not None and out_format in Image.SAVE:  # .psd: read only
        try:
            Image.new("RGB", (1, 1)).save(io.BytesIO(), format=out_format)
        except (OSError, ValueError):
            out_format = None
    if out_format is None or out_format not in Image.SAVE:
        raise typer.BadParameter(
            f"{out.name!r} has no image extension Pillow writes an RGB image as (.png, .jpg, .webp ...)",
            param_hint="--out",
        )
    return out_format
