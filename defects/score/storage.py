"""Where `defects score` reads and writes: a local folder or an `s3://bucket/prefix`.

One `pyarrow.fs` filesystem serves both, so listing, reading, Parquet parts and overlays go
through the same calls wherever the data live. S3 takes the endpoint and credentials DVC and
MLflow use (defects.settings: DEFECTS_S3_*, AWS_*, or `.env`); where none are set, the AWS
default chain applies. A `Location` pickles (credentials included) so Ray workers on other
machines reach the same bucket without a `.env` of their own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from defects.formats.io import atomic_write_bytes
from defects.settings import load_settings

S3 = "s3://"
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Location:
    """A folder on a filesystem: `root` is the filesystem's own path (no scheme)."""

    fs: pafs.FileSystem
    root: str
    scheme: str = ""

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        """A path under the root, in the filesystem's own spelling."""
        return "/".join([self.root.rstrip("/"), *(p.strip("/") for p in parts)])

    def uri(self, path: str) -> str:
        """How a path is shown and keyed: `s3://bucket/key`, or the absolute local path."""
        return f"{self.scheme}{path}"

    def path_of(self, key: str) -> str:
        """The filesystem path of a key `uri` made."""
        return key[len(self.scheme) :]

    def relative(self, key: str) -> str:
        """A key's path below the root ("sub/a.png")."""
        return self.path_of(key)[len(self.root) :].strip("/")

    def child(self, *parts: str) -> Location:
        return Location(self.fs, self.join(*parts), self.scheme)

    def __str__(self) -> str:
        return self.uri(self.root)


def s3_filesystem() -> pafs.S3FileSystem:
    """S3 with the machine's endpoint and keys (defects.settings), else the AWS chain."""
    settings = load_settings()
    secret = settings.s3_secret_access_key
    keys = {}
    if settings.s3_access_key_id and secret is not None:
        keys = {"access_key": settings.s3_access_key_id, "secret_key": secret.get_secret_value()}
    return pafs.S3FileSystem(
        endpoint_override=settings.s3_endpoint_url,
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", DEFAULT_REGION),
        **keys,
    )


def location(where: str, flag: str) -> Location:
    """The Location of a local folder or `s3://bucket/prefix`; `flag` names the option in
    errors. Other schemes are refused rather than read as local folder names."""
    if where.startswith(S3):
        root = where[len(S3) :].strip("/")
        if not root:
            raise ValueError(f"{flag}: '{where}' names no bucket")
        return Location(s3_filesystem(), root, S3)
    if "://" in where:
        raise ValueError(f"{flag}: '{where}': only local folders and s3:// are supported")
    return Location(pafs.LocalFileSystem(), Path(where).expanduser().resolve().as_posix())


def is_dir(where: Location) -> bool:
    return where.fs.get_file_info(where.root).type == pafs.FileType.Directory


def put_bytes(where: Location, path: str, data: bytes) -> None:
    """Write a file whole or not at all: a local temp sibling renamed in; on S3 one PUT
    (an object appears only once its upload completes)."""
    if where.local:
        atomic_write_bytes(path, data)
        return
    with where.fs.open_output_stream(path) as stream:
        stream.write(data)


def read_bytes(where: Location, path: str) -> bytes:
    with where.fs.open_input_file(path) as stream:
        return stream.read()
