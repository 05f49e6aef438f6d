"""A shop leaves: `roomfit tenants delete` removes it and everything it owns, rows and blobs, and
nothing of another shop; `roomfit tenants list` and `roomfit keys list` show what there is. Made
through the API (photos, a training, previews, a webhook), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from cli.main import app
from core.blob_keys import tenant_prefix
from core.settings import get_settings
from core.tables import TENANT_TABLES, Job
from tests.api.conftest import ApiEnv, create_preview, photos_files, ready_subject, succeed_preview

runner = CliRunner()


@pytest.fixture
def cli(env: ApiEnv, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`roomfit ...` on the same database and blob store as the app; its JSON answer (or the result)."""
    for name in ("database_url", "blob_url", "var_dir", "broker_url"):
        monkeypatch.setenv(f"ROOMFIT_{name.upper()}", str(getattr(env.settings, name)))
    get_settings.cache_clear()

    def run(*args: str, exit_code: int = 0) -> Any:
        result = runner.invoke(app, list(args))
        assert result.exit_code == exit_code, (result.output, result.exception)
        return json.loads(result.stdout) if exit_code == 0 else json.loads(result.stderr)

    yield run
    get_settings.cache_clear()


def _count(table: Any, tenant_id: str) -> Any:
    return select(func.count()).select_from(table).where(table.tenant_id == tenant_id)


def _rows_of(env: ApiEnv, tenant_id: str) -> dict[str, int]:
    with env.session() as session:
        return {
            table.__tablename__: int(session.scalar(_count(table, tenant_id)) or 0) for table in TENANT_TABLES
        }


def _shop_with_everything(env: ApiEnv) -> dict[str, Any]:
    """Shop A: a subject training (its photos stored, the job running), a ready one with a painted
    preview and a queued one, a webhook."""
    a = env.a
    made = env.client.post("/v1/subjects", headers=a.auth(), data={"name": "sofa"}, files=photos_files(2))
    assert made.status_code == 202, made.text
    with env.session() as session:
        session.execute(update(Job).where(Job.subject_id == made.json()["id"]).values(status="running"))
        session.commit()
    ready = ready_subject(env, a, "lamp")
    painted = create_preview(env, a, ready)["id"]
    succeed_preview(env, painted)
    create_preview(env, a, ready, kind="publishable")
    hook = env.client.put("/v1/webhook", headers=a.auth(), json={"url": "https://shop-a.example/hooks"})
    assert hook.status_code == 200
    return {"painted": painted}


def test_deleting_a_tenant_leaves_nothing_of_it_and_everything_of_the_others(env: ApiEnv, cli: Any) -> None:
    a, b = env.a, env.b
    made = _shop_with_everything(env)
    other = create_preview(env, b, ready_subject(env, b))["id"]
    before_b = _rows_of(env, b.tenant_id)
    b_blobs = env.blobs.list(tenant_prefix(b.tenant_id))
    assert len(env.blobs.list(tenant_prefix(a.tenant_id))) >= 7  # 2 photos, 2 rooms, 2 masks, a result

    refused = cli("tenants", "delete", "shop-a", exit_code=2)
    assert "--yes" in refused["detail"] and "shop-a" in refused["detail"]
    assert env.client.get(f"/v1/previews/{made['painted']}", headers=a.auth()).status_code == 200

    deleted = cli("tenants", "delete", "shop-a", "--yes")["deleted"]
    assert deleted["tenant_id"] == a.tenant_id and deleted["name"] == "shop-a"
    assert (deleted["keys"], deleted["subjects"], deleted["previews"]) == (2, 2, 2)
    assert deleted["jobs_cancelled"] == 3  # the training and the two previews' jobs
    assert deleted["blobs"] >= 7

    assert all(count == 0 for count in _rows_of(env, a.tenant_id).values()), _rows_of(env, a.tenant_id)
    assert env.blobs.list(tenant_prefix(a.tenant_id)) == []
    assert env.client.get("/v1/subjects", headers=a.auth()).status_code == 401  # its keys are gone
    assert env.client.get("/v1/subjects", headers=a.auth("publishable")).status_code == 401
    # the other shop: every row and blob as it was, and it still works
    assert _rows_of(env, b.tenant_id) == before_b
    assert env.blobs.list(tenant_prefix(b.tenant_id)) == b_blobs
    assert env.client.get(f"/v1/previews/{other}", headers=b.auth()).status_code == 200

    assert [t["name"] for t in cli("tenants", "list")["tenants"]] == ["shop-b"]
    again = cli("tenants", "delete", a.tenant_id, "--yes", exit_code=2)
    assert again["detail"] == f"no tenant {a.tenant_id!r}"


def test_tenants_and_keys_are_listed_without_the_keys_themselves(env: ApiEnv, cli: Any) -> None:
    a = env.a
    ready_subject(env, a)
    tenants = {t["name"]: t for t in cli("tenants", "list")["tenants"]}
    assert set(tenants) == {"shop-a", "shop-b"}
    shop_a = tenants["shop-a"]
    assert (shop_a["active_keys"], shop_a["subjects"], shop_a["previews"]) == (2, 1, 0)

    keys = cli("keys", "list", "--tenant", "shop-a")["keys"]
    assert {k["id"] for k in keys} == {a.secret_id, a.publishable_id}
    assert {k["kind"] for k in keys} == {"secret", "publishable"}
    publishable = next(k for k in keys if k["kind"] == "publishable")
    assert publishable["origins"] == [a.origin] and publishable["revoked_at"] is None
    listed = json.dumps(keys)
    assert a.secret not in listed and a.secret[3:] not in listed and a.publishable not in listed
    assert all(a.secret.startswith(k["display"].rstrip(".…")) for k in keys if k["kind"] == "secret")

    (ops,) = cli("keys", "list", "--ops")["keys"]
    assert ops["kind"] == "ops" and ops["tenant_id"] is None
    cli("keys", "revoke", a.secret_id)
    assert {k["id"] for k in cli("keys", "list", "--tenant", a.tenant_id)["keys"]} == {a.publishable_id}
    revoked = cli("keys", "list", "--tenant", a.tenant_id, "--revoked")["keys"]
    assert {k["id"]: k["revoked_at"] is not None for k in revoked} == {
        a.secret_id: True,
        a.publishable_id: False,
    }
    assert len(cli("keys", "list")["keys"]) == 4  # b's two, a's publishable, the ops key

    assert cli("keys", "list", "--tenant", "nope", exit_code=2)["detail"] == "no tenant 'nope'"
    both = cli("keys", "list", "--tenant", "shop-a", "--ops", exit_code=2)
    assert "--tenant or --ops" in both["detail"]
