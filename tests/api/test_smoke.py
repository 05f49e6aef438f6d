from __future__ import annotations

from tests.api.conftest import ApiEnv, create_preview, photos_files, ready_subject


def test_smoke(sqlite_env: ApiEnv) -> None:
    env = sqlite_env
    r = env.client.post("/v1/subjects", headers=env.a.auth(), data={"name": "sofa"}, files=photos_files(2))
    assert r.status_code == 202, r.text
    print(r.json())
    sid = ready_subject(env, env.a)
    p = create_preview(env, env.a, sid)
    print(p)
    r = env.client.get(f"/v1/previews/{p['id']}", headers=env.a.auth())
    assert r.status_code == 200, r.text
