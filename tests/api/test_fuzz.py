"""Property-based fuzzing from the OpenAPI document (schemathesis) against the app on PostgreSQL.

Every operation gets generated requests (valid and invalid per the schema, authenticated with a real
key: secret for tenant routes, ops for /v1/ops); every answer must be no 5xx, have a documented
status and content type, and match its documented schema. Bounded by `FUZZ_EXAMPLES` per operation
so CI stays fast; raise it locally with ROOMFIT_FUZZ_EXAMPLES for a longer hunt.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import REQUESTS
from tests.api.conftest import ApiEnv, build_env, make_settings, ready_subject
from tests.services import create_database, drop_database

FUZZ_EXAMPLES = int(os.environ.get("ROOMFIT_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory, _postgres_server_url: str) -> Iterator[ApiEnv]:
    name = f"roomfit_fuzz_{os.getpid()}"
    url = create_database(_postgres_server_url, name)
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    try:
        for built in build_env(make_settings(tmp, url)):
            ready_subject(built, built.a)
            yield built
    finally:
        drop_database(_postgres_server_url, name)


def _check_operation(operation: Any, fuzz_env: ApiEnv) -> None:
    key = fuzz_env.ops_key if operation.path.startswith("/v1/ops") else fuzz_env.a.secret

    # schemathesis' own pytest plugin does not load on this pytest; hypothesis drives it directly.
    @given(case=operation.as_strategy())
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {key}"},
            checks=[
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    run()


def test_no_5xx_and_responses_match_schema(fuzz_env: ApiEnv) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_env.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    before = _requests_served()
    failures: list[str] = []
    for operation in operations:
        try:
            _check_operation(operation, fuzz_env)
        except Exception as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
    # Guard against a silently empty run: hypothesis must really have sent requests.
    assert _requests_served() - before >= len(operations) * min(FUZZ_EXAMPLES, 5)


def _requests_served() -> float:
    return sum(s.value for m in REQUESTS.collect() for s in m.samples if s.name.endswith("_total"))
