"""The OpenAPI document as client generators read it, and the Python client generated from it.

`make client` dumps the document (clients/dump_openapi.py) and runs openapi-python-client on it;
this does the same into a temporary folder: the generator must have nothing to warn about, and
the committed clients/openapi.json and clients/python/roomfit_client must equal a fresh generation
byte for byte (change the API, run `make client`). The rest reads the document: one `Problem`
schema that every error answer refers to, the short operation ids, the PNG result and its redirect,
the headers that come with 202, 429, 503 and replayed POSTs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs  # schemathesis's
import pytest

from api.problems import PROBLEM_JSON, REGISTRY, codes_by_status
from tests.api.conftest import ApiEnv

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "clients"
COMMITTED = CLIENTS / "python" / "roomfit_client"
PROBLEM_REF = "#/components/schemas/Problem"
METHODS = {"get", "put", "post", "delete", "patch"}

OPERATION_IDS = {
    ("get", "/healthz"): "get_health",
    ("get", "/readyz"): "get_readiness",
    ("post", "/v1/subjects"): "create_subject",
    ("get", "/v1/subjects"): "list_subjects",
    ("get", "/v1/subjects/{subject_id}"): "get_subject",
    ("delete", "/v1/subjects/{subject_id}"): "delete_subject",
    ("post", "/v1/subjects/{subject_id}/train"): "train_subject",
    ("post", "/v1/previews"): "create_preview",
    ("get", "/v1/previews/{preview_id}"): "get_preview",
    ("get", "/v1/previews/{preview_id}/result"): "get_preview_result",
    ("delete", "/v1/previews/{preview_id}"): "delete_preview",
    ("get", "/v1/previews/{preview_id}/events"): "preview_events",
    ("get", "/v1/subjects/{subject_id}/events"): "subject_events",
    ("get", "/v1/jobs/{job_id}"): "get_job",
    ("get", "/v1/ops/queues"): "list_queues",
    ("get", "/v1/ops/workers"): "list_workers",
    ("get", "/v1/ops/jobs"): "list_jobs",
    ("get", "/v1/ops/jobs/{job_id}"): "get_ops_job",
    ("get", "/v1/ops/usage"): "get_usage",
    ("post", "/v1/ops/jobs/{job_id}/retry"): "retry_job",
    ("post", "/v1/ops/jobs/{job_id}/cancel"): "cancel_job",
    ("put", "/v1/webhook"): "set_webhook",
    ("get", "/v1/webhook"): "get_webhook",
    ("delete", "/v1/webhook"): "delete_webhook",
}


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # The generator's post hooks call `ruff`: this environment's, as `make client` does.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """What `make client` does, into a temporary folder: (document, client package, generator output)."""
    folder = tmp_path_factory.mktemp("client")
    document = folder / "openapi.json"
    dumped = _run(str(CLIENTS / "dump_openapi.py"), str(document), cwd=folder)
    assert dumped.returncode == 0, dumped.stdout + dumped.stderr
    package = folder / "roomfit_client"
    done = _run(
        "-m",
        "openapi_python_client",
        "generate",
        "--path",
        str(document),
        "--config",
        str(CLIENTS / "python-config.yaml"),
        "--meta",
        "none",
        "--output-path",
        str(package),
        cwd=folder,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return document, package, output


@pytest.fixture(scope="module")
def doc(generated: tuple[Path, Path, str]) -> dict[str, Any]:
    return json.loads(generated[0].read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and ".ruff_cache" not in path.parts
    }


# --- the generator and the committed client ------------------------------------------------------


def test_the_generator_has_nothing_to_warn_about(generated: tuple[Path, Path, str]) -> None:
    _, package, output = generated
    assert "warning" not in output.lower(), output
    assert "error" not in output.lower(), output
    assert (package / "api" / "previews" / "get_preview_result.py").is_file()


def test_the_committed_client_is_a_fresh_generation(generated: tuple[Path, Path, str]) -> None:
    document, package, _ = generated
    hint = "the API changed: run `make client` and commit clients/"
    assert (CLIENTS / "openapi.json").read_bytes() == document.read_bytes(), hint
    fresh, committed = _files(package), _files(COMMITTED)
    assert sorted(committed) == sorted(fresh), hint
    changed = [name for name in fresh if committed[name] != fresh[name]]
    assert not changed, f"{hint} ({', '.join(changed)})"


def test_the_webhook_helper_is_not_in_the_generated_folder() -> None:
    # `make client` empties roomfit_client/: the hand-written helper and README must live beside it.
    assert (CLIENTS / "python" / "roomfit_webhooks.py").is_file()
    assert (CLIENTS / "python" / "README.md").is_file()
    assert not (COMMITTED / "roomfit_webhooks.py").exists()


def test_the_webhook_helper_checks_what_roomfit_signs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(CLIENTS / "python"))
    import roomfit_webhooks

    from core.webhooks import sign  # what the webhook pool puts in Roomfit-Signature

    secret, body, at = "whsec_test", b'{"id":"evt_1","type":"subject.ready"}', 1_700_000_000
    header = sign(secret, at, body)
    assert roomfit_webhooks.sign(secret, body, at) == header
    assert roomfit_webhooks.verify(secret, header, body, now=at + 299)
    assert roomfit_webhooks.parse_event(secret, header, body.decode(), now=at)["type"] == "subject.ready"
    refused = [
        ("whsec_other", header, body, at),  # another secret
        (secret, header, body + b" ", at),  # another body
        (secret, header, body, at + 301),  # too old: a replay
        (secret, header.replace(f"t={at}", f"t={at + 1}"), body, at),  # another timestamp
        (secret, "v1=" + header.split("v1=")[1], body, at),  # no timestamp
        (secret, "", body, at),
    ]
    for args in refused:
        assert not roomfit_webhooks.verify(*args[:3], now=args[3]), args
    with pytest.raises(roomfit_webhooks.InvalidSignature):
        roomfit_webhooks.parse_event(secret, None, body, now=at)


# --- the document --------------------------------------------------------------------------------


def test_one_problem_schema_with_every_registered_code(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    problem = schemas["Problem"]
    assert problem["properties"]["code"]["enum"] == list(REGISTRY)
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    assert problem["properties"]["errors"]["anyOf"][0]["items"] == {"$ref": "#/components/schemas/FieldError"}
    # FastAPI's own validation answer is never sent (api.problems answers `validation_error`).
    assert not {"HTTPValidationError", "ValidationError"} & set(schemas)
    # Nowhere inlined: the problem schema appears in the document once, as the component.
    assert json.dumps(doc).count(json.dumps(problem["description"])) == 1


def test_every_error_answer_refers_to_the_problem(doc: dict[str, Any]) -> None:
    seen = 0
    for method, path, operation in _operations(doc):
        for status, response in operation["responses"].items():
            if int(status) < 400 or path == "/readyz":
                continue
            seen += 1
            assert response["content"] == {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}, (method, path)
            for code in codes_by_status()[int(status)]:
                assert f"`{code}`" in response["description"], (method, path, status, code)
    assert seen > 100


def test_short_stable_operation_ids(doc: dict[str, Any]) -> None:
    found = {(m, p): op["operationId"] for m, p, op in _operations(doc)}
    assert found == OPERATION_IDS


def test_the_result_is_a_png_or_a_redirect(doc: dict[str, Any]) -> None:
    responses = doc["paths"]["/v1/previews/{preview_id}/result"]["get"]["responses"]
    binary = {"schema": {"type": "string", "format": "binary"}}
    # the PNG as painted, or a display rendition (`format` / `max_side`)
    assert responses["200"]["content"] == {"image/png": binary, "image/jpeg": binary, "image/webp": binary}
    location = responses["307"]["headers"]["Location"]
    assert location["required"] and location["schema"]["format"] == "uri"
    assert {"404", "409"} <= set(responses)


def test_headers_of_answers(doc: dict[str, Any]) -> None:
    for method, path, operation in _operations(doc):
        responses = operation["responses"]
        for status in ("429", "503"):
            if status in responses and path.startswith("/v1"):
                assert responses[status]["headers"]["Retry-After"]["required"], (method, path, status)
        if "401" in responses:
            assert "WWW-Authenticate" in responses["401"]["headers"], (method, path)
        idempotent = any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))
        assert idempotent == (method == "post"), (method, path)
        for status, response in responses.items():
            if status.startswith("2"):
                assert ("Idempotency-Replayed" in response.get("headers", {})) == idempotent, (path, status)
    for path in ("/v1/subjects", "/v1/previews", "/v1/subjects/{subject_id}/train"):
        assert doc["paths"][path]["post"]["responses"]["202"]["headers"]["Location"]["required"], path
    assert "Retry-After" in doc["paths"]["/v1/previews"]["post"]["responses"]["409"]["headers"]


def test_fastapi_validation_answers_become_problems() -> None:
    # A route that declares no 422 of its own gets FastAPI's HTTPValidationError answer; the
    # document shows what api.problems really sends instead.
    from fastapi import FastAPI

    from api.openapi import install_document

    app = FastAPI()

    @app.get("/items", operation_id="list_items")
    def list_items(limit: int = 10) -> dict[str, int]:
        return {"limit": limit}

    install_document(app)
    doc = app.openapi()
    answer = doc["paths"]["/items"]["get"]["responses"]["422"]
    assert answer["content"] == {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}
    assert "`validation_error`" in answer["description"]
    assert not {"HTTPValidationError", "ValidationError"} & set(doc["components"]["schemas"])
    assert {"Problem", "FieldError"} <= set(doc["components"]["schemas"])
    assert app.openapi() is doc  # built once


def test_served_document_is_the_dumped_one(sqlite_env: ApiEnv, doc: dict[str, Any]) -> None:
    # The running app answers the same document, whatever its settings.
    assert sqlite_env.client.get("/openapi.json").json() == doc


def test_problem_answers_match_the_schema(sqlite_env: ApiEnv, doc: dict[str, Any]) -> None:
    client, auth = sqlite_env.client, sqlite_env.a.auth()
    schema = {**doc["components"]["schemas"]["Problem"], "components": doc["components"]}
    validator = jsonschema_rs.validator_for(schema)  # its $refs point into `components`
    answers = {
        "not_found": client.get("/v1/subjects/sub_nope", headers=auth),
        "validation_error": client.get("/v1/subjects?limit=1000", headers=auth),
        "unauthorized": client.get("/v1/subjects"),
    }
    for code, response in answers.items():
        assert response.headers["content-type"] == PROBLEM_JSON
        body = response.json()
        validator.validate(body)
        assert body["code"] == code
    assert answers["validation_error"].json()["errors"][0]["loc"] == ["query", "limit"]
    with pytest.raises(jsonschema_rs.ValidationError):
        validator.validate({**answers["not_found"].json(), "code": "no_such_code"})
