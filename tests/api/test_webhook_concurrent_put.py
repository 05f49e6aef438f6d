"""Two `PUT /v1/webhook` of one shop at once, when it has none yet: both find no webhook and both
insert one, and the tenant has only one (a unique constraint). The later must not answer 500 (the
contract: never a 500 for what a client sent); it points the one webhook at its URL, as a PUT
after the other's would, with the secret it answers."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from core.ids import new_id
from core.repository import TenantRepository
from core.tables import Webhook
from tests.api.conftest import ApiEnv


def test_a_put_racing_another_first_put_wins_no_500(env: ApiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    looked = TenantRepository.webhook

    def other_put_lands_meanwhile(self: TenantRepository) -> Any:
        found = looked(self)
        if found is None and self.tenant_id == env.a.tenant_id:
            # The other PUT commits its new webhook between this one's look and its insert.
            with env.session() as other:
                hook = Webhook(
                    id=new_id("whk"), tenant_id=self.tenant_id, url="https://a.example/h", secret="s"
                )
                other.add(hook)
                other.commit()
        return found

    monkeypatch.setattr(TenantRepository, "webhook", other_put_lands_meanwhile)
    put = env.client.put("/v1/webhook", headers=env.a.auth(), json={"url": "https://b.example/hook"})
    monkeypatch.undo()
    assert put.status_code == 200, put.text
    with env.session() as session:
        hooks = session.scalars(select(Webhook).where(Webhook.tenant_id == env.a.tenant_id)).all()
    assert [(h.url, h.secret) for h in hooks] == [("https://b.example/hook", put.json()["secret"])]
    assert env.client.get("/v1/webhook", headers=env.a.auth()).json()["url"] == "https://b.example/hook"
