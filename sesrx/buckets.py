"""Where S3 actions put objects: a local folder, or an S3-compatible store.

A bucket named under ``buckets:`` lives on its endpoint; any other bucket is
the folder ``<data_dir>/s3/<bucket>``. S3 actions, the setup notification
and whoever reads objects back go through :class:`BucketStore` and need not
know which kind a bucket is. Both kinds hold the same key and the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sesrx.config import RemoteBucket
from sesrx.remote_s3 import RemoteClients
from sesrx.storage import DataDir

__all__ = ["BucketStore"]

_NONE: Mapping[str, RemoteBucket] = MappingProxyType({})


class BucketStore:
    """Write and read S3 objects, in local folders or on remote endpoints."""

    def __init__(
        self,
        data_dir: DataDir,
        remote: Mapping[str, RemoteBucket] = _NONE,
        clients: RemoteClients | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.remote = remote
        self._clients = clients or RemoteClients()

    def for_buckets(self, remote: Mapping[str, RemoteBucket]) -> BucketStore:
        """Return a store for another configuration's buckets, sharing clients."""
        if remote is self.remote:
            return self
        return BucketStore(self.data_dir, remote, self._clients)

    def is_remote(self, bucket: str) -> bool:
        """Say whether ``bucket`` lives on an endpoint rather than in a folder."""
        return bucket in self.remote

    async def put_object(
        self, bucket: str, key: str, parts: list[bytes]
    ) -> dict[str, str]:
        """Store the parts, joined, as one object; return where, for the trace.

        Raises :class:`~sesrx.errors.StorageError` when the object could not
        be stored, so the sender is asked to retry.
        """
        remote = self.remote.get(bucket)
        if remote is None:
            path = await self.data_dir.put_object(bucket, key, parts)
            return {"path": str(path)}

        await self._clients.put_object(remote, key, b"".join(parts))
        return {"endpoint_url": remote.endpoint_url}

    async def get_object(self, bucket: str, key: str) -> bytes:
        """Return an object's bytes; raise ObjectNotFoundError when there is none."""
        remote = self.remote.get(bucket)
        if remote is None:
            return await self.data_dir.get_object(bucket, key)
        return await self._clients.get_object(remote, key)

    async def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Return the bucket's keys starting with ``prefix``, in S3's order."""
        remote = self.remote.get(bucket)
        if remote is None:
            return await self.data_dir.list_keys(bucket, prefix)
        return await self._clients.list_keys(remote, prefix)
