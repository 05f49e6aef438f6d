"""`roomfit`: the command line (typer). Every command reads the same settings as the service."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from cli.adapters import app as adapters_app
from cli.doctor import doctor
from cli.engine import paint
from cli.errors import RoomfitGroup, RoomfitTyper, fail, redact, require_migrated
from cli.eval import evaluate
from cli.models import app as models_app
from cli.train import train
from core import logs
from core.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

app = RoomfitTyper(
    name="roomfit",
    help="Paint a shop's own product into a shopper's room photo.",
    no_args_is_help=True,
    add_completion=False,
    cls=RoomfitGroup,  # one handler turns every command's expected failures into one line (cli/errors.py)
    # --debug's traceback: plain (greppable, pasteable), and never the locals, which hold secrets
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
)
tenants_app = typer.Typer(help="Tenants (shops).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: shown once, stored hashed.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.add_typer(adapters_app, name="adapters")
app.command()(paint)
app.command()(train)
app.command("eval")(evaluate)
app.command()(doctor)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of a failure (also ROOMFIT_LOG_LEVEL=DEBUG).")
    ] = False,
) -> None:
    """Paint a shop's own product into a shopper's room photo."""
    # `debug` is read by RoomfitGroup.invoke from the parsed parameters; nothing to do here.


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def _fail(message: str) -> NoReturn:
    fail("invalid_argument", message)


def _configure_logs(level: str) -> None:
    """roomfit's log lines (core.logs); a bad `ROOMFIT_LOG_FORMAT` is a settings mistake, said in one line."""
    try:
        logs.configure(level)
    except ValueError as exc:
        fail("invalid_settings", str(exc))


# `up` and `serve` bind the same way
HostOption = Annotated[str | None, typer.Option(help="Address to bind (default ROOMFIT_HOST).")]
# 0-65535, as ROOMFIT_PORT: the kernel would bind a larger number modulo 65536, under another port
PortOption = Annotated[
    int | None, typer.Option(min=0, max=65535, help="Port to bind (default ROOMFIT_PORT).")
]


def _bind(host: str | None, port: int | None) -> tuple[str, int]:
    settings = get_settings()
    return host or settings.host, settings.port if port is None else port


@app.command()
def up(host: HostOption = None, port: PortOption = None) -> None:
    """Embedded mode: migrate, serve the API and run workers for all queues. Ctrl-C stops all."""
    from cli.embedded import run_embedded

    settings = get_settings()
    _require_state_folder(settings.var_dir)
    raise typer.Exit(run_embedded(settings, *_bind(host, port)))


@app.command()
def serve(
    host: HostOption = None,
    port: PortOption = None,
    workers: Annotated[
        int, typer.Option(min=1, help="API processes sharing the port; /metrics sums them all.")
    ] = 1,
) -> None:
    """The API alone (distributed mode)."""
    import uvicorn

    from api.scrape import prepare_multiprocess

    settings = get_settings()
    bind_host, bind_port = _bind(host, port)
    _configure_logs(settings.log_level)
    # Before the workers start: they inherit the variable (prometheus_client's multiprocess mode).
    prepare_multiprocess(workers, settings.var_dir.resolve() / "prometheus-multiproc")
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=workers,
        log_level=settings.log_level.lower(),
        log_config=None,  # roomfit's handler (core.logs), not uvicorn's
        access_log=False,  # api.access_log writes one line per request, with its ids
        proxy_headers=True,
    )


@app.command()
def worker(
    queues: Annotated[
        str, typer.Option(help="Comma-separated queues: train, preview, webhooks, default.")
    ] = "train,preview,webhooks,default",
    name: Annotated[str | None, typer.Option(help="Worker node name (default QUEUES@host).")] = None,
) -> None:
    """A worker for those queues: one process, one task at a time (one GPU each)."""
    from worker.celery_app import QUEUES, celery_app

    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(wanted) - set(QUEUES))
    if not wanted or unknown:
        _fail(f"unknown queue(s) {unknown or wanted}; choose from {', '.join(QUEUES)}")
    settings = get_settings()
    node = name or f"{'-'.join(wanted)}@%h"
    _configure_logs(settings.log_level)  # Celery's own setup keeps it (worker.celery_app)
    from models.errors import ModelNotFoundError
    from worker.startup import prepare_worker

    try:
        heartbeat = prepare_worker(wanted)
    except ModelNotFoundError as exc:
        fail(exc.code, f"cannot start the worker: {exc}", 1)
    # GPU queues: the solo pool, so the model lives in this process and is reused by every task (no
    # forked copies). Webhook deliveries wait on the network, not a GPU: threads, several at once.
    if set(wanted) <= {"webhooks", "default"}:
        pool = ["--pool", "threads", "--concurrency", str(WEBHOOK_THREADS)]
    else:
        pool = ["--pool", "solo"]
    try:
        celery_app.worker_main(
            ["worker", "-Q", ",".join(wanted), *pool, "-n", node, "--loglevel", settings.log_level]
        )
    finally:  # a warm or cold stop (a SIGKILL runs nothing: that row times out instead)
        heartbeat.sign_off()


WEBHOOK_THREADS = 8


@app.command()
def migrate() -> None:
    """Bring the database schema to head."""
    from core.migrate import upgrade

    settings = get_settings()
    if not settings.database_url:  # the SQLite file goes in the state folder
        _require_state_folder(settings.var_dir)
    url = settings.resolved_database_url
    upgrade(url)
    _print_json({"migrated": True, "database": redact(url)})


def _require_state_folder(var_dir: Path) -> None:
    """ROOMFIT_VAR_DIR is a folder, or can be made one: a file there (or above it) is a settings
    mistake, said in one line before `migrate` or `up` fails to make the folder (FileExistsError)."""
    above = next((p for p in (var_dir.absolute(), *var_dir.absolute().parents) if p.exists()), None)
    if above is not None and not above.is_dir():
        fail("invalid_settings", f"ROOMFIT_VAR_DIR={str(var_dir)!r}: {above} is a file, not a folder")


def _account_change(change: Callable[[Session], dict[str, Any]]) -> None:
    """Run `change` in one transaction and print what it returns; an AccountError is the user's mistake.

    Every database command comes through here: a database that is down or not migrated is said in
    one line before anything runs (cli/errors.py)."""
    from core.accounts import AccountError
    from core.db import session_scope

    require_migrated()
    try:
        with session_scope() as session:
            out = change(session)
    except AccountError as exc:
        _fail(str(exc))
    _print_json(out)


def _fields(row: Any, *names: str) -> dict[str, Any]:
    return {name: getattr(row, name) for name in names}


def _find_tenant(session: Session, ref: str) -> Any:
    """The tenant named (or with the id) `ref`; without one, the one-line failure."""
    from core.accounts import tenant_by_name_or_id

    owner = tenant_by_name_or_id(session, ref)
    if owner is None:
        _fail(f"no tenant {ref!r}")
    return owner


@tenants_app.command("create")
def tenants_create(name: Annotated[str, typer.Argument(help="The shop's name, unique.")]) -> None:
    """Create a tenant."""
    from core.accounts import create_tenant

    _account_change(lambda session: _fields(create_tenant(session, name), "id", "name"))


@tenants_app.command("list")
def tenants_list() -> None:
    """Every tenant, with how many keys, subjects and previews it has."""
    from core.accounts import tenant_summaries

    _account_change(lambda session: {"tenants": tenant_summaries(session)})


@tenants_app.command("delete")
def tenants_delete(
    tenant: Annotated[str, typer.Argument(help="Tenant name or id.")],
    yes: Annotated[bool, typer.Option("--yes", help="Yes: delete it and everything it owns.")] = False,
) -> None:
    """Delete a tenant and everything it owns: keys (revoked first), products, photos, adapters,
    previews, jobs (cancelled first), webhook; in the database and the blob store. Cannot be undone."""
    from dataclasses import asdict

    from core.blobstore import blob_store_from_settings
    from core.tenant_deletion import delete_tenant

    def remove(session: Session) -> dict[str, Any]:
        owner = _find_tenant(session, tenant)
        if not yes:
            _fail(f"this deletes tenant {owner.name!r} ({owner.id}) and everything it owns; add --yes")
        return {"deleted": asdict(delete_tenant(session, blob_store_from_settings(get_settings()), owner))}

    _account_change(remove)


@keys_app.command("create")
def keys_create(
    kind: Annotated[str, typer.Option(help="secret | publishable | ops")],
    tenant: Annotated[str | None, typer.Option(help="Tenant name or id (not for ops keys).")] = None,
    origin: Annotated[
        list[str] | None, typer.Option(help="Origin a publishable key may be used from (repeatable).")
    ] = None,
) -> None:
    """Create a key. It is printed once and stored only as a hash."""
    from core.accounts import create_key

    if kind not in ("secret", "publishable", "ops"):
        _fail("--kind is one of secret, publishable, ops")

    def create(session: Session) -> dict[str, Any]:
        owner = _find_tenant(session, tenant) if tenant is not None else None
        row, plaintext = create_key(session, kind=kind, tenant=owner, origins=origin)  # type: ignore[arg-type]
        return {
            "id": row.id,
            "key": plaintext,
            "kind": row.kind,
            "tenant_id": row.tenant_id,
            "origins": row.origins,
        }

    _account_change(create)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys (name or id).")] = None,
    ops: Annotated[bool, typer.Option("--ops", help="Only the ops keys.")] = False,
    revoked: Annotated[bool, typer.Option("--revoked", help="Revoked keys too.")] = False,
) -> None:
    """Keys as stored: id, kind, tenant, the first characters shown at creation, origins, dates.
    Never a key itself: only its hash is kept."""
    from core.accounts import list_keys

    def listing(session: Session) -> dict[str, Any]:
        owner = _find_tenant(session, tenant) if tenant is not None else None
        rows = list_keys(session, tenant=owner, ops_only=ops, revoked=revoked)
        names = ("id", "kind", "tenant_id", "display", "origins", "created_at", "revoked_at")
        return {"keys": [_fields(row, *names) for row in rows]}

    _account_change(listing)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")]) -> None:
    """Revoke a key; it stops working at once."""
    from core.accounts import revoke_key

    _account_change(lambda session: _fields(revoke_key(session, key_id), "id", "revoked_at"))


if __name__ == "__main__":
    sys.exit(app())
