"""Buckets on an S3-compatible endpoint (MinIO, moto, LocalStack, S3), via boto3.

boto3 is optional (``pip install 'sesrx[s3]'``) and imported only when a
configuration names a bucket under ``buckets:``. Its calls block, so each
one runs on a worker thread. A client is made on first use and shared by
those threads: boto3 clients may be shared, sessions may not (boto3 guide,
"Multithreading or multiprocessing with clients").

Every failure of boto3, botocore or the network becomes a
:class:`~sesrx.errors.StorageError`, so the SMTP client is told to retry.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sesrx.config import RemoteBucket
from sesrx.errors import ObjectNotFoundError, StorageError

__all__ = ["INSTALL_HINT", "RemoteClients", "boto3_problem"]

INSTALL_HINT = "pip install 'sesrx[s3]'"

# A store that is down should cost a sender seconds, not a minute: it is
# answered 451 and retries later (botocore's own defaults are a 60 s
# connect and read timeout and 3 attempts).
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 10.0
ATTEMPTS = 2  # the first try and one retry

# Error codes of GetObject and ListObjectsV2 that mean "not there".
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "404"})


def boto3_problem() -> str | None:
    """Return why boto3 cannot be used here, or None when it can."""
    try:
        import boto3  # noqa: F401
        import botocore.config  # noqa: F401
    except ImportError as exc:
        return f"needs boto3, which cannot be imported ({exc}): {INSTALL_HINT}"
    return None


class RemoteClients:
    """One boto3 S3 client per endpoint and credentials, made on first use."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str | None, ...], Any] = {}
        self._lock = threading.Lock()

    async def put_object(self, bucket: RemoteBucket, key: str, body: bytes) -> None:
        """Store ``body`` under ``key``; raise :class:`StorageError` on failure."""
        await asyncio.to_thread(self._put, bucket, key, body)

    async def get_object(self, bucket: RemoteBucket, key: str) -> bytes:
        """Return the object's bytes; raise :class:`ObjectNotFoundError` if absent."""
        return await asyncio.to_thread(self._get, bucket, key)

    async def list_keys(self, bucket: RemoteBucket, prefix: str = "") -> list[str]:
        """Return the bucket's keys that start with ``prefix``, in S3's order."""
        return await asyncio.to_thread(self._list, bucket, prefix)

    def client(self, bucket: RemoteBucket) -> Any:
        """Return the shared client for the bucket's endpoint and credentials."""
        settings = (
            bucket.endpoint_url,
            bucket.region,
            bucket.access_key_id,
            bucket.secret_access_key,
        )
        with self._lock:
            if settings not in self._clients:
                self._clients[settings] = _new_client(bucket)
            return self._clients[settings]

    def _put(self, bucket: RemoteBucket, key: str, body: bytes) -> None:
        try:
            self.client(bucket).put_object(Bucket=bucket.name, Key=key, Body=body)
        except _errors() as exc:
            raise _failure("write", bucket, key, exc) from exc

    def _get(self, bucket: RemoteBucket, key: str) -> bytes:
        try:
            response = self.client(bucket).get_object(Bucket=bucket.name, Key=key)
            return bytes(response["Body"].read())
        except _errors() as exc:
            if _code(exc) in _NOT_FOUND:
                where = f"s3://{bucket.name}/{key} at {bucket.endpoint_url}"
                raise ObjectNotFoundError(f"no object {where}: {exc}") from exc
            raise _failure("read", bucket, key, exc) from exc

    def _list(self, bucket: RemoteBucket, prefix: str) -> list[str]:
        try:
            pages = self.client(bucket).get_paginator("list_objects_v2")
            return [
                str(item["Key"])
                for page in pages.paginate(Bucket=bucket.name, Prefix=prefix)
                for item in page.get("Contents", ())
            ]
        except _errors() as exc:
            raise _failure("list", bucket, prefix, exc) from exc


def _new_client(bucket: RemoteBucket) -> Any:
    import boto3.session
    from botocore.config import Config

    # A session per client: boto3's default session is not safe to share
    # between threads while clients are made.
    session = boto3.session.Session(
        aws_access_key_id=bucket.access_key_id,
        aws_secret_access_key=bucket.secret_access_key,
        region_name=bucket.region,
    )
    settings = Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
        # S3-compatible stores on a host name of their own (localhost, a
        # container name) serve buckets as paths, not as subdomains.
        s3={"addressing_style": "path"},
    )
    return session.client("s3", endpoint_url=bucket.endpoint_url, config=settings)


def _errors() -> tuple[type[Exception], ...]:
    """Return what boto3 and the network raise when a call fails."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, Boto3Error, OSError)


def _code(exc: Exception) -> str | None:
    """Return the S3 error code of a ClientError, such as ``NoSuchKey``."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def _failure(verb: str, bucket: RemoteBucket, key: str, exc: Exception) -> StorageError:
    where = f"s3://{bucket.name}/{key} at {bucket.endpoint_url}"
    return StorageError(f"cannot {verb} {where}: {exc}")
