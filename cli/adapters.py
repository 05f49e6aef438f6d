"""`roomfit adapters export | import`: roomfit adapters as diffusers / peft LoRA files, and back.

Registered by cli/main.py as `app.add_typer(adapters_app, name="adapters")`. The format work is
`models.adapter_export`'s; here: finding the adapter (a file, or a subject id read from the
service's database and blob store, `ROOMFIT_DATABASE_URL` / `ROOMFIT_BLOB_URL`), and loading the
base model an import is bound to (`ROOMFIT_BASE_MODEL`, `ROOMFIT_LORA_RANK`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer

from cli.arguments import check_out_file, finite, write_whole
from cli.engine import BaseModelOption, load_cli_base
from cli.errors import database_report, fail

if TYPE_CHECKING:
    from models import BaseModel

app = typer.Typer(
    help="Move product adapters between roomfit and the diffusers / peft LoRA format.",
    no_args_is_help=True,
)

SourceArgument = Annotated[
    str,
    typer.Argument(help="A roomfit adapter file, or a subject id (sub_...): its current adapter."),
]


@app.command("export")
def export(
    source: SourceArgument,
    out: Annotated[Path, typer.Option(help="Where to write the diffusers LoRA (.safetensors).")],
    # the three the help names: any other word wrote a file neither diffusers' default loader nor
    # `roomfit adapters import` (models.adapter_export's known prefixes) reads
    prefix: Annotated[
        Literal["transformer", "unet", "none"],
        typer.Option(
            help="Key prefix: transformer (what `unet.load_lora_adapter(path)` reads by default), unet "
            "(StableDiffusion-style pipelines' load_lora_weights) or none (load with prefix=None)."
        ),
    ] = "transformer",
) -> None:
    """Write an adapter as a diffusers LoRA file: `unet.load_lora_adapter(OUT)` paints as roomfit does."""
    from models.adapter_export import export_diffusers
    from models.adapter_format import read_adapter

    check_out_file(out)
    with _expected_errors():
        data = _read_source(source)
        exported = export_diffusers(data, prefix=None if prefix == "none" else prefix)
        spec = read_adapter(data).spec
    write_whole(out, exported)
    _print_json(
        {
            "out": str(out),
            "prefix": prefix,
            "rank": spec.rank,
            "alpha": spec.alpha,
            "targets": list(spec.targets),
            "bytes": len(exported),
        }
    )


@app.command("import")
def import_(
    lora: Annotated[
        Path,
        typer.Argument(
            help="A diffusers / peft LoRA (.safetensors) of the UNet.", exists=True, dir_okay=False
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the roomfit adapter (.safetensors).")],
    reference: Annotated[
        list[Path] | None,
        typer.Option(
            help="A photo of the product (repeatable): previews paint from the most typical.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    # alike: typer options are declarative, one per flag; their shapes repeat by design.
    subject: Annotated[
        str | None,
        typer.Option(
            help="A subject id (or roomfit adapter file) whose current adapter's reference the new one "
            "keeps, instead of --reference."
        ),
    ] = None,
    # alike: one typer option per flag, shaped as train's; they share their declaration, nothing else.
    alpha: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            callback=finite,
            help="LoRA alpha (default: the file's metadata, else its rank, as diffusers).",
        ),
    ] = None,
    base_model: BaseModelOption = None,
) -> None:
    """Make a diffusers / peft LoRA a roomfit adapter of the base model (same rank and layers)."""
    from core.settings import get_settings
    from models.adapter_export import import_diffusers
    from models.lora import inject_lora

    if reference and subject:
        raise typer.BadParameter("give --reference or --subject, not both")
    check_out_file(out)  # before the base model loads, not when writing
    settings = get_settings()
    with _expected_errors():
        base = load_cli_base(base_model or settings.base_model, None, shared=True)
        if getattr(base.unet, "roomfit_lora", None) is None:
            base.lora = inject_lora(base.unet, rank=settings.lora_rank)  # the slots a worker paints with
        info: dict[str, Any] = {"source_file": lora.name}
        embedding = None
        if subject is not None:
            embedding = _source_embedding(subject)
            info["subject"] = subject
        elif reference:
            embedding = _photos_embedding(base, reference)
        imported = import_diffusers(
            lora.read_bytes(),
            unet=base.unet,
            base_model_id=base.model_id,
            base_weights_hash=base.weights_hash,
            reference_embedding=embedding,
            alpha=alpha,
            info=info,
        )
    write_whole(out, imported.data)
    _print_json(
        {
            "out": str(out),
            "base_model": base.model_id,
            "rank": imported.spec.rank,
            "alpha": imported.spec.alpha,
            "alpha_from": imported.alpha_from,
            "layers": imported.layers,
            "fp16_rounding": imported.fp16_rounding,
            "bytes": len(imported.data),
        }
    )


def _read_source(source: str) -> bytes:
    """An adapter's bytes: the file `source` names, else the current adapter of subject `source`."""
    path = Path(source)
    if path.is_file():
        return path.read_bytes()
    if path.suffix or "/" in source:  # meant as a file: do not go looking in the database for it
        _fail(f"no adapter file {source!r}")
    from sqlalchemy.exc import SQLAlchemyError

    from core.blobstore import blob_store_from_settings
    from core.db import session_scope
    from core.settings import get_settings
    from core.tables import Subject

    try:
        with session_scope() as session:
            row = session.get(Subject, source)
            key = row.adapter_key if row is not None else None
    except SQLAlchemyError as exc:
        # down (exit 1) or not migrated (says `roomfit migrate`), as every database command says it
        problem = database_report(get_settings().resolved_database_url).problem
        if problem is not None:
            fail(problem.code, problem.detail, problem.exit_code)
        _fail(f"no adapter file {source!r}, and the database cannot be read for a subject ({exc.code})")
    if row is None:
        _fail(f"no adapter file and no subject {source!r}")
    if key is None:
        _fail(f"subject {source!r} has no trained adapter yet")
    return blob_store_from_settings(get_settings()).get(key)


def _source_embedding(source: str) -> Any:
    from models.adapter_format import read_adapter

    return read_adapter(_read_source(source)).reference_embedding


def _photos_embedding(base: BaseModel, photos: list[Path]) -> Any:
    from models.conditioning import product_embedding
    from models.images import open_image

    return product_embedding(base, [open_image(p, f"photo {p.name}") for p in photos])[1]


@contextmanager
def _expected_errors() -> Iterator[None]:
    """A model error, a bad value or a missing blob: one JSON line on stderr and exit code 2."""
    from core.blobstore import BlobNotFound
    from models.errors import RoomfitModelError

    try:
        yield
    except (RoomfitModelError, ValueError, BlobNotFound) as exc:
        missing = "adapter_not_found" if isinstance(exc, BlobNotFound) else "invalid_argument"
        typer.echo(json.dumps({"error": getattr(exc, "code", missing), "detail": str(exc)}), err=True)
        raise typer.Exit(2) from exc


def _fail(detail: str) -> NoReturn:
    typer.echo(json.dumps({"error": "adapter_not_found", "detail": detail}), err=True)
    raise typer.Exit(2)


def _print_json(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(payload, indent=2))
