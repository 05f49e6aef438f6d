"""An S3 store whose credentials S3 refuses is not ready: `ping` (the API's /readyz, a worker's start)
says so instead of passing, while every photo, mask and adapter call would then fail.

HEAD bucket answers a bare 403 both to wrong credentials and to right ones without s3:ListBucket;
the store tolerated any 403 as the second, so a mistyped secret key passed readiness."""

from __future__ import annotations

import secrets

import pytest

from core.blobstore import BlobStoreError, BlobStoreUnavailable
from core.s3_blobstore import S3BlobStore
from tests.services import S3Settings


def _store(settings: S3Settings, bucket: str, *, access_key: str, secret_key: str) -> S3BlobStore:
    return S3BlobStore(
        bucket,
        endpoint_url=settings.endpoint,
        region=settings.region,
        access_key=access_key,
        secret_key=secret_key,
    )


@pytest.fixture
def bucket(s3_settings: S3Settings) -> str:
    """A bucket that exists, with one object in it."""
    name = f"roomfit-creds-{secrets.token_hex(4)}"
    good = _store(s3_settings, name, access_key=s3_settings.access_key, secret_key=s3_settings.secret_key)
    good.put("a/photo.png", b"png")
    return name


@pytest.mark.parametrize("wrong", ["secret", "access"])
def test_ping_fails_when_s3_refuses_the_credentials(s3_settings: S3Settings, bucket: str, wrong: str) -> None:
    access_key, secret_key = s3_settings.access_key, s3_settings.secret_key
    if wrong == "secret":
        secret_key = secrets.token_hex(20)
    else:
        access_key = f"nobody{secrets.token_hex(4)}"
    bad = _store(s3_settings, bucket, access_key=access_key, secret_key=secret_key)
    # The premise: this S3 checks signatures (the harness's SeaweedFS does; an open server named by
    # ROOMFIT_TEST_S3_* would make the check below prove nothing, so it fails here instead).
    with pytest.raises(BlobStoreError):
        bad.get("a/photo.png")

    with pytest.raises(BlobStoreError, match=r"InvalidAccessKeyId|SignatureDoesNotMatch") as refused:
        bad.ping()
    # refused, not unreachable: retrying will not help, and the message says what to fix
    assert not isinstance(refused.value, BlobStoreUnavailable)


def test_ping_still_passes_with_good_credentials(s3_settings: S3Settings, bucket: str) -> None:
    good = _store(s3_settings, bucket, access_key=s3_settings.access_key, secret_key=s3_settings.secret_key)
    good.ping()
    good.ping()  # each ping asks S3 again
    assert good.get("a/photo.png") == b"png"
