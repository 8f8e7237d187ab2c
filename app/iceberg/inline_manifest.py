"""Task manifests kept in the job store instead of in a file of their own.

A tiny task's manifest is a few hundred bytes of entries behind a header of several kilobytes (the
Avro schema of a manifest entry and the table's schema), identical for every task of a job that
writes one schema. Writing it as a file costs a file creation (a PUT on object storage), a read at
commit and a delete once merged away, per task. So a worker may record a small manifest *inline*:
its bytes after the header (the sync marker and the entry blocks) travel in the descriptor, and the
header once per job under its digest (:mod:`app.jobs.manifest_store`). The
manifest keeps its path as its name: the commit reads it through :class:`InlineManifestIO` as if it
were a file there, merges it like any other, and writes it, under a name of the commit attempt (as it
names merged manifests), only when the snapshot lists it unmerged. So no file is ever at a task's own
path, and no cleanup deletes one. First writer wins exactly as for a file: the descriptor is the record.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyiceberg.io import FileIO, InputFile, InputStream, OutputFile

DIGEST_CHARS = 32


@functools.lru_cache(maxsize=64)  # a job's tasks share one header object: its hash is cached
def header_digest(header: bytes) -> str:
    return hashlib.sha256(header).hexdigest()[:DIGEST_CHARS]


@dataclass(frozen=True)
class InlineManifest:
    """A manifest's bytes after its header, and the header's digest (the header itself once read back)."""

    digest: str
    body: bytes
    header: bytes = b""  # the Avro header: given by the writer, filled in by the store when read back

    def to_dict(self) -> dict[str, str]:
        return {"header": self.digest, "body": base64.b64encode(self.body).decode("ascii")}

    @classmethod
    def from_dict(cls, data: Any) -> InlineManifest:
        if not isinstance(data, dict):
            raise ValueError(f"inline manifest {data!r} is not an object")
        digest, body = data["header"], data["body"]
        if not isinstance(digest, str) or len(digest) != DIGEST_CHARS or digest.strip("0123456789abcdef"):
            raise ValueError(f"inline manifest header digest {digest!r} is not {DIGEST_CHARS} hex digits")
        if not isinstance(body, str) or not body:
            raise ValueError("inline manifest body is not base64 text")
        return cls(digest, base64.b64decode(body, validate=True))

    def file_bytes(self) -> bytes:
        """The manifest file as the worker would have written it."""
        if not self.header:
            raise ValueError(f"the header of inline manifest {self.digest} was not read back")
        return self.header + self.body


class _InlineInput(InputFile):
    def __init__(self, location: str, manifest: InlineManifest) -> None:
        super().__init__(location)
        self._manifest = manifest

    def __len__(self) -> int:
        return len(self._manifest.header) + len(self._manifest.body)

    def exists(self) -> bool:
        return True

    def open(self, seekable: bool = True) -> InputStream:
        return io.BytesIO(self._manifest.file_bytes())  # made when read: a job's are not all held as files


class InlineManifestIO(FileIO):
    """``inner``, except that the inline manifests are read from memory (writes and deletes go through)."""

    def __init__(self, inner: FileIO, inline: Mapping[str, InlineManifest]) -> None:
        super().__init__(inner.properties)
        self.inner = inner
        self.inline = dict(inline)

    def new_input(self, location: str) -> InputFile:
        manifest = self.inline.get(location)
        return _InlineInput(location, manifest) if manifest is not None else self.inner.new_input(location)

    def new_output(self, location: str) -> OutputFile:
        return self.inner.new_output(location)

    def delete(self, location: str | InputFile | OutputFile) -> None:
        self.inner.delete(location)


def write_file(file_io: FileIO, location: str, data: bytes) -> None:
    with file_io.new_output(location).create(overwrite=True) as stream:
        stream.write(data)
