"""A blob store setting that cannot be used is one `invalid_settings` line naming the variable.

`blob_store_from_settings` raised plain ValueErrors for ROOMFIT_BLOB_URL and let botocore's own
through for the S3 settings ("Invalid endpoint: minio:9000", InvalidRegionError): neither names
the variable to fix, and the CLI (cli.errors.explain) took both for a bug and printed a traceback.
An endpoint botocore accepts but cannot use (ftp://) failed only at the first request.
"""

from __future__ import annotations

import pytest

from cli.errors import explain
from core.blobstore import LocalBlobStore, blob_store_from_settings
from core.s3_blobstore import S3BlobStore
from core.settings import InvalidSetting, Settings


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"blob_url": "gs://bucket"}, "ROOMFIT_BLOB_URL"),
        ({"blob_url": "s3://"}, "ROOMFIT_BLOB_URL"),
        ({"blob_url": "file://relative/path"}, "ROOMFIT_BLOB_URL"),
        ({"blob_url": "s3://bucket/a/../b"}, "ROOMFIT_BLOB_URL"),
        ({"blob_url": "s3://bucket", "s3_endpoint_url": "minio:9000"}, "ROOMFIT_S3_ENDPOINT_URL"),
        ({"blob_url": "s3://bucket", "s3_endpoint_url": "ftp://minio:9000"}, "ROOMFIT_S3_ENDPOINT_URL"),
        ({"blob_url": "s3://bucket", "s3_endpoint_url": "http://[::1"}, "ROOMFIT_S3_ENDPOINT_URL"),
        (
            {"blob_url": "s3://bucket", "s3_public_endpoint_url": "s3.example.com"},
            "ROOMFIT_S3_PUBLIC_ENDPOINT_URL",
        ),
        ({"blob_url": "s3://bucket", "s3_region": "eu west 1"}, "ROOMFIT_S3_REGION"),
    ],
)
def test_unusable_settings_name_their_variable(values: dict[str, object], variable: str) -> None:
    with pytest.raises(InvalidSetting, match=variable) as refused:
        blob_store_from_settings(_settings(**values))
    problem = explain(refused.value)
    assert problem is not None, "the CLI would print a traceback"
    assert problem.code == "invalid_settings"
    assert variable in str(problem)


def test_endpoint_credentials_are_not_echoed() -> None:
    with pytest.raises(InvalidSetting) as refused:
        blob_store_from_settings(
            _settings(blob_url="s3://bucket", s3_endpoint_url="ftp://user:hunter2@minio")
        )
    assert "hunter2" not in str(refused.value)


def test_usable_settings_still_make_a_store(tmp_path: object) -> None:
    s3 = blob_store_from_settings(
        _settings(
            blob_url="s3://bucket/pre",
            s3_endpoint_url="https://minio.internal:9000",
            s3_public_endpoint_url="https://s3.shop.example",
            s3_region="eu-west-1",
        )
    )
    assert isinstance(s3, S3BlobStore)
    assert isinstance(
        blob_store_from_settings(_settings(blob_url="file:///tmp/roomfit-blobs")), LocalBlobStore
    )
