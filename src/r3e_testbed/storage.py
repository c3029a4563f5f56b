"""The one object-store access layer: a thin protocol over fsspec filesystems.

Everything that reads or writes objects (ingest, the model registry, the forecast service, the
event bridge's reconcile, the harness) goes through :class:`ObjectStore`, keys relative to one
bucket. :class:`FsspecStore` implements it on any fsspec filesystem: s3fs on the testbed
(:func:`s3_store`, or the filesystem of an Airflow ``ObjectStoragePath`` inside a DAG), and
:class:`DirectoryStore` is a local folder for tests and offline use.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

#: Bytes fetched per request when an object is streamed (ingest reads block by block).
STREAM_BLOCK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a listing. ``modified``: seconds since the epoch, as the store reports it."""

    key: str
    etag: str
    size: int
    modified: float


class ObjectStore(Protocol):
    """What the pipeline needs from an object store (keys are relative to one bucket)."""

    def get(self, key: str) -> bytes:
        """The object's bytes; ``KeyError`` if there is none."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` in one atomic write."""

    def exists(self, key: str) -> bool: ...

    def etag(self, key: str) -> str | None:
        """A tag that changes whenever the object does; ``None`` if there is no object."""

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a string prefix, as S3 has it), sorted."""

    def objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix`` with its tag, size and modification time, in one listing."""

    def open(self, key: str) -> Any:
        """A binary stream of the object, read piece by piece; ``KeyError`` if there is none."""


def _modified(info: dict[str, Any]) -> float:
    """A listing entry's modification time: s3fs reports ``LastModified`` (a datetime), local
    filesystems ``mtime`` (seconds)."""
    stamp = info.get("LastModified") or info.get("mtime") or info.get("created") or 0
    return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)


class FsspecStore:
    """One bucket (or folder) of an fsspec filesystem as an :class:`ObjectStore`.

    ``root`` is the bucket name for object stores, a folder for local filesystems. Tags are the
    S3 ETag (MD5 of the content for plain uploads) where the filesystem reports one.
    """

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.root = str(root).rstrip("/")

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad object key {key!r}")
        return f"{self.root}/{key}"

    def get(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            raise KeyError(key) from None

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)

    def exists(self, key: str) -> bool:
        return self.etag(key) is not None

    def _tag(self, info: dict[str, Any]) -> str:
        return str(info.get("ETag") or info.get("etag") or "").strip('"')

    def etag(self, key: str) -> str | None:
        try:
            info = self.fs.info(self._path(key))
        except FileNotFoundError:
            return None
        return self._tag(info) if info.get("type") != "directory" else None

    def objects(self, prefix: str) -> list[ObjectInfo]:
        # Listing from the prefix's folder, then filtering, works on every filesystem (S3 has no
        # folders; fsspec's find wants one).
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = f"{self.root}/{folder}".rstrip("/")
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return []
        start = len(self.root) + 1
        listing = []
        for path, info in sorted(found.items()):
            key = path[start:]
            if key.startswith(prefix) and info.get("type") != "directory":
                listing.append(ObjectInfo(key, self._tag(info), int(info.get("size") or 0), _modified(info)))
        return listing

    def keys(self, prefix: str) -> list[str]:
        return [info.key for info in self.objects(prefix)]

    def open(self, key: str) -> Any:
        try:
            return self.fs.open(self._path(key), "rb", block_size=STREAM_BLOCK_BYTES, cache_type="readahead")
        except FileNotFoundError:
            raise KeyError(key) from None


class DirectoryStore(FsspecStore):
    """An object store in a local folder: ``put`` writes a temporary file and renames it (atomic),
    and the tag is the content's MD5, as S3 reports it for plain uploads."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        from fsspec.implementations.local import LocalFileSystem

        super().__init__(LocalFileSystem(), str(Path(root).absolute()))

    @property
    def folder(self) -> Path:
        return Path(self.root)

    def put(self, key: str, data: bytes) -> None:
        path = Path(self._path(key))
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as handle:
            handle.write(data)
        Path(handle.name).replace(path)

    def etag(self, key: str) -> str | None:
        try:
            return hashlib.md5(self.get(key), usedforsecurity=False).hexdigest()
        except (KeyError, IsADirectoryError):
            return None

    def keys(self, prefix: str) -> list[str]:
        if not self.folder.is_dir():
            return []
        found = (p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file())
        return sorted(k for k in found if k.startswith(prefix) and "/.tmp-" not in f"/{k}")

    def objects(self, prefix: str) -> list[ObjectInfo]:
        listing = []
        for key in self.keys(prefix):
            stat = Path(self._path(key)).stat()
            listing.append(ObjectInfo(key, self.etag(key) or "", stat.st_size, stat.st_mtime))
        return listing

    def open(self, key: str) -> Any:
        try:
            return Path(self._path(key)).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise KeyError(key) from None


def s3_filesystem(*, endpoint_url: str, access_key: str, secret_key: str, region: str = "us-east-1") -> Any:
    """An s3fs filesystem for an S3-compatible store (path-style addressing, as SeaweedFS needs).

    Listings are never cached: pollers (the forecast service, the event bridge) must see changes.
    Short timeouts: a poller or a task should notice an unreachable store in seconds.
    """
    import s3fs

    return s3fs.S3FileSystem(
        key=access_key,
        secret=secret_key,
        endpoint_url=endpoint_url,
        client_kwargs={"region_name": region},
        config_kwargs={
            "s3": {"addressing_style": "path"},
            "retries": {"max_attempts": 5, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 60,
        },
        use_listings_cache=False,
        skip_instance_cache=True,
    )


def s3_store(
    bucket: str, *, endpoint_url: str, access_key: str, secret_key: str, region: str = "us-east-1"
) -> FsspecStore:
    """One bucket of an S3-compatible store."""
    fs = s3_filesystem(endpoint_url=endpoint_url, access_key=access_key, secret_key=secret_key, region=region)
    return FsspecStore(fs, bucket)
