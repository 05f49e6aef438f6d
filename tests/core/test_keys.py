"""Keys are created from the command line, shown once, and stored only as a hash."""

from __future__ import annotations

import json

from sqlalchemy import MetaData, select
from typer.testing import CliRunner

from cli.main import app
from core.accounts import find_active_key
from core.api_keys import hash_key
from core.db import make_engine, session_factory
from core.settings import Settings

runner = CliRunner()


def _run(*args: str) -> dict:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_keys_are_stored_hashed_and_shown_once(embedded_env: Settings) -> None:
    _run("migrate")
    tenant = _run("tenants", "create", "Sofa Shop")
    secret = _run("keys", "create", "--tenant", "Sofa Shop", "--kind", "secret")
    pub = _run(
        "keys",
        "create",
        "--tenant",
        tenant["id"],
        "--kind",
        "publishable",
        "--origin",
        "https://Shop.example/",
    )
    ops = _run("keys", "create", "--kind", "ops")
    assert secret["key"].startswith("sk_") and pub["key"].startswith("pk_") and ops["key"].startswith("ok_")
    assert pub["origins"] == ["https://shop.example"]

    # Read every cell of every table: no plaintext key anywhere, its hash where expected.
    engine = make_engine(embedded_env.resolved_database_url)
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        dump = " ".join(
            str(v) for table in meta.sorted_tables for row in conn.execute(select(table)) for v in row
        )
    for made in (secret, pub, ops):
        assert made["key"] not in dump
        assert made["key"][3:] not in dump  # not even without its prefix
        assert hash_key(made["key"]) in dump

    with session_factory(engine)() as session:
        assert find_active_key(session, secret["key"]).id == secret["id"]
        assert find_active_key(session, secret["key"] + "x") is None
    _run("keys", "revoke", secret["id"])
    with session_factory(engine)() as session:
        assert find_active_key(session, secret["key"]) is None  # revoked at once
        assert find_active_key(session, pub["key"]).id == pub["id"]
    engine.dispose()


def test_bad_key_commands_fail_clearly(embedded_env: Settings) -> None:
    _run("migrate")
    _run("tenants", "create", "shop")
    cases = [
        (["tenants", "create", "shop"], "exists already"),
        (["keys", "create", "--kind", "secret"], "needs --tenant"),
        (["keys", "create", "--kind", "secret", "--tenant", "nope"], "no tenant"),
        (["keys", "create", "--kind", "publishable", "--tenant", "shop"], "at least one --origin"),
        (
            ["keys", "create", "--kind", "publishable", "--tenant", "shop", "--origin", "shop.example"],
            "not of the form",
        ),
        (["keys", "create", "--kind", "ops", "--tenant", "shop"], "belongs to no tenant"),
        (["keys", "create", "--kind", "root"], "--kind is one of"),
        (["keys", "revoke", "key_nope"], "no key"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
