"""`S3BlobStore`: the blob store as objects of one S3 bucket (AWS, MinIO, SeaweedFS).

The contract it keeps is `core.blobstore`'s; this module is only the S3 half of it, kept apart so
that the protocol and the local store read in one sitting.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from core.blobstore import (
    CHUNK_SIZE,
    BlobNotFound,
    BlobStore,
    BlobStoreError,
    BlobStoreUnavailable,
    Download,
    Presigned,
    folder_prefix,
    validate_key,
)

# Error codes S3 (and SeaweedFS, MinIO) use for "no such object"; HEAD answers carry only the status.
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchBucket"})
# Answers that mean "busy or broken right now", worth a retry (5xx statuses are too).
_TRANSIENT_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"})


class S3ConfigError(ValueError):
    """An argument of `S3BlobStore` that cannot work; `argument` names it, `reason` says why."""

    def __init__(self, argument: str, reason: str) -> None:
        super().__init__(f"{argument}: {reason}")
        self.argument = argument
        self.reason = reason


def _check_endpoint(argument: str, url: str | None) -> None:
    """Refuse an endpoint no request could use. botocore accepts some (ftp://host) and fails only
    at the first request; others it refuses with a message that echoes the URL, userinfo and all."""
    if url is None:
        return
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        ok = False
    if not ok:
        raise S3ConfigError(
            argument, "must be an http:// or https:// URL with a host, such as http://minio:9000"
        )


class S3BlobStore(BlobStore):
    """Blobs as objects of one S3 bucket, optionally under a key prefix.

    A PUT replaces an object atomically by S3's own semantics. The bucket is created on first use
    if missing. Timeouts are short and retries few, so a dead endpoint turns into
    `BlobStoreUnavailable` within seconds instead of hanging a request or a worker.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        prefix: str = "",
        public_endpoint_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
        ping_timeout: float = 3.0,
    ) -> None:
        import boto3  # only S3 deployments pay for importing boto3
        from botocore.config import Config
        from botocore.exceptions import InvalidRegionError

        if not bucket:
            raise ValueError("S3 bucket name is empty")
        _check_endpoint("endpoint_url", endpoint_url)
        _check_endpoint("public_endpoint_url", public_endpoint_url)
        self.bucket = bucket
        try:
            self.prefix = folder_prefix(prefix)
        except ValueError as exc:
            raise S3ConfigError("prefix", str(exc)) from None
        self.region = region

        def client(
            endpoint: str | None, argument: str, timeout: float | None = None, attempts: int = max_attempts
        ) -> Any:
            try:
                return _client(endpoint, timeout, attempts)
            except InvalidRegionError:
                raise S3ConfigError("region", f"{region!r} is not a region name, such as eu-west-1") from None
            except ValueError:  # botocore's own check of the endpoint, stricter than ours in places
                raise S3ConfigError(argument, "botocore refuses it as an endpoint URL") from None

        def _client(endpoint: str | None, timeout: float | None, attempts: int) -> Any:
            return boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=Config(
                    connect_timeout=connect_timeout if timeout is None else min(connect_timeout, timeout),
                    read_timeout=read_timeout if timeout is None else timeout,
                    retries={"max_attempts": attempts, "mode": "standard"},
                    # presigned URLs too: AWS regions opened since 2014 accept nothing older
                    signature_version="s3v4",
                    # custom endpoints (MinIO, SeaweedFS) rarely have wildcard DNS for bucket hosts
                    s3={"addressing_style": "path" if endpoint else "auto"},
                ),
            )

        self._client: Any = client(endpoint_url, "endpoint_url")
        # Browsers fetch presigned URLs from outside: behind compose or Kubernetes the endpoint the
        # workers use (http://minio:9000) is not one a shopper can reach. The host is part of what
        # SigV4 signs, so those URLs are signed by a client that names the public endpoint.
        self._presigner: Any = (
            client(public_endpoint_url, "public_endpoint_url") if public_endpoint_url else self._client
        )
        # `ping` (readiness, a worker's start) asks one small question: an S3 that accepts the
        # connection and then says nothing must fail it in seconds, not after the read timeout meant
        # for large bodies, attempts over (minutes, an API thread held all along).
        self._pinger: Any = client(
            endpoint_url, "endpoint_url", min(read_timeout, ping_timeout), min(max_attempts, 2)
        )
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3BlobStore({self.bucket!r}, prefix={self.prefix!r})"

    # errors and bucket

    @contextlib.contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """Translate botocore's exceptions into the store's own."""
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if key is not None and (code in _NOT_FOUND_CODES or status == 404):
                raise BlobNotFound(key) from None
            message = f"S3 bucket {self.bucket!r}: {code} {error.get('Message', '')}"
            if status >= 500 or code in _TRANSIENT_CODES:
                raise BlobStoreUnavailable(message) from exc
            raise BlobStoreError(message) from exc
        except (BotoConnectionError, HTTPClientError) as exc:
            raise BlobStoreUnavailable(f"S3 at {self._client.meta.endpoint_url} unreachable: {exc}") from exc
        except BotoCoreError as exc:
            raise BlobStoreError(f"S3 bucket {self.bucket!r}: {exc}") from exc

    def _ensure_bucket(self, force: bool = False, client: Any = None) -> None:
        """Create the bucket if it does not exist; checked once per store (always when `force`)."""
        if self._bucket_ready and not force:
            return
        client = client or self._client
        from botocore.exceptions import ClientError

        with self._bucket_lock, self._errors():
            if self._bucket_ready and not force:
                return
            try:
                client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 404:
                    self._create_bucket(client)
                elif status != 403:
                    raise
                else:
                    self._check_refusal(client)
            self._bucket_ready = True

    def _check_refusal(self, client: Any) -> None:
        """HEAD bucket said 403, with no body to say why: raise unless it is only a missing right.

        Least-privilege credentials (object rights, no s3:ListBucket) cannot look at the bucket
        itself; they are fine. Credentials S3 does not accept (a wrong secret, an unknown key id) get
        the same bare 403, and must not pass `ping`: readiness would be green while every object
        call fails. A GET answer carries the error code that tells the two apart."""
        from botocore.exceptions import ClientError

        try:
            client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "AccessDenied":
                raise  # InvalidAccessKeyId, SignatureDoesNotMatch, ...: named by _errors

    def _create_bucket(self, client: Any) -> None:
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":  # AWS rejects an explicit us-east-1 constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            client.create_bucket(**kwargs)
        except ClientError as exc:
            # another process won the race to create it: just as good
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou",):
                raise

    def _object(self, key: str) -> str:
        return self.prefix + validate_key(key)

    # the interface

    def put(self, key: str, data: bytes | BinaryIO, content_type: str | None = None) -> None:
        name = self._object(key)
        self._ensure_bucket()
        body: Any = data
        if not isinstance(data, bytes | bytearray | memoryview) and not (
            hasattr(data, "seekable") and data.seekable()
        ):
            # botocore rewinds the body to retry and to checksum it; a pipe cannot be rewound
            body = data.read()
        extra = {"ContentType": content_type} if content_type else {}
        with self._errors():
            self._client.put_object(Bucket=self.bucket, Key=name, Body=body, **extra)

    def open(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        name = self._object(key)
        self._ensure_bucket()
        with self._errors(key):
            body = self._client.get_object(Bucket=self.bucket, Key=name)["Body"]
        return self._chunks(body, chunk_size)

    def _chunks(self, body: Any, chunk_size: int) -> Iterator[bytes]:
        try:
            with self._errors():
                yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def get(self, key: str) -> bytes:
        name = self._object(key)
        self._ensure_bucket()
        with self._errors(key):
            body = self._client.get_object(Bucket=self.bucket, Key=name)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

    def _head(self, key: str) -> dict[str, Any]:
        name = self._object(key)
        self._ensure_bucket()
        with self._errors(key):
            return dict(self._client.head_object(Bucket=self.bucket, Key=name))

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except BlobNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def delete(self, key: str) -> None:
        name = self._object(key)
        self._ensure_bucket()
        with self._errors():
            self._client.delete_object(Bucket=self.bucket, Key=name)  # S3: deleting nothing is fine

    def _list_objects(self, folder: str) -> list[str]:
        self._ensure_bucket()
        names: list[str] = []
        with self._errors():
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + folder
            )
            for page in pages:
                names.extend(item["Key"] for item in page.get("Contents", []))
        return names

    def list(self, prefix: str = "") -> list[str]:
        names = self._list_objects(folder_prefix(prefix))
        return sorted(name[len(self.prefix) :] for name in names)

    def delete_prefix(self, prefix: str) -> int:
        folder = folder_prefix(prefix)
        if not folder:
            raise ValueError("delete_prefix needs a prefix; refusing to delete the whole store")
        names = self._list_objects(folder)
        for start in range(0, len(names), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": name} for name in names[start : start + 1000]]
            with self._errors():
                answer = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise BlobStoreError(f"S3 could not delete {first.get('Key')!r}: {first.get('Code')}")
        return len(names)

    def presign(self, key: str, seconds: int) -> str:
        # S3 would sign a URL for a missing object too, and the client would get a 404 later;
        # checking first lets the API answer 404 itself.
        self._head(key)
        with self._errors(key):
            return str(
                self._presigner.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": self._object(key)},
                    ExpiresIn=int(seconds),
                )
            )

    def download(self, key: str, seconds: int) -> Download:
        # The client fetches from S3 itself: no bytes through the API.
        return Presigned(self.presign(key, seconds))

    def ping(self) -> None:
        # Always a request (HEAD bucket): readiness must notice an S3 that went away since.
        self._ensure_bucket(force=True, client=self._pinger)
