"""The job store's task manifests: recorded first writer wins, read back for the commit.

Part of :class:`app.jobs.store.JobStore` (its only Redis client, ``_r``); kept apart so each file reads
as one concern. A manifest kept inline (app/iceberg/inline_manifest.py) travels in its record; its
Avro header, the same for every task of a job that writes one schema, is stored once per job by
digest. This process remembers which headers it has seen stored, and sends a header only when it has
not: a record whose header the store lacks is answered ``header`` and sent again with it, so a record
is never accepted without its header.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import redis

from app import keys
from app.iceberg import ManifestDescriptor
from app.iceberg.inline_manifest import InlineManifest, header_digest
from app.jobs.model import Job
from app.jobs.running_store import pairs

HEADERS_REMEMBERED = 4096  # (job, digest) pairs known stored; forgotten all at once past this


@dataclass(frozen=True)
class RecordResult:
    status: str  # accepted | duplicate | late | unknown
    detail: str = ""
    job: Job | None = None  # accepted: the job as the manifest left it

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


class ManifestStore:
    _r: redis.Redis
    _record: Any  # the RECORD_MANIFEST script, registered by JobStore
    _headers_stored: set[tuple[str, str]]  # made by JobStore

    def manifest(self, job_id: str, task_id: str) -> str | None:
        return self._r.hget(keys.job_manifests(job_id), task_id)  # type: ignore[return-value]

    def manifests(self, job_id: str) -> list[ManifestDescriptor]:
        """The job's recorded manifests, the inline ones with their headers (one round trip). A header
        that does not match its digest is left out: the commit refuses the manifests that need it."""
        pipe = self._r.pipeline(transaction=True)
        pipe.hgetall(keys.job_manifests(job_id))
        pipe.hgetall(keys.job_manifest_headers(job_id))
        data, stored = pipe.execute()
        headers = {}
        for digest, text in stored.items():
            try:
                header = base64.b64decode(text, validate=True)
            except ValueError:
                continue
            if header_digest(header) == digest:
                headers[digest] = header
        return [ManifestDescriptor.from_json(v).with_header_from(headers) for _, v in sorted(data.items()) if v]

    def record_manifest(
        self, job_id: str, task_id: str, descriptor: ManifestDescriptor | None, now: float | None = None
    ) -> RecordResult:
        """First writer wins per (job, task): accepted, duplicate (detail: the recorded description),
        late (detail: the job's state) or unknown (no such job)."""
        inline = _with_header(descriptor)
        known = inline is not None and (job_id, inline.digest) in self._headers_stored
        result = self._record_once(job_id, task_id, descriptor, now, send_header=not known)
        if result.status == "header":  # taken for stored, and it is not (the store lost it): send it
            result = self._record_once(job_id, task_id, descriptor, now, send_header=True)
        if inline is not None and result.accepted:
            if len(self._headers_stored) >= HEADERS_REMEMBERED:
                self._headers_stored.clear()
            self._headers_stored.add((job_id, inline.digest))
        return result

    def _record_once(
        self, job_id: str, task_id: str, descriptor: ManifestDescriptor | None, now: float | None, send_header: bool
    ) -> RecordResult:
        inline = _with_header(descriptor)
        header = base64.b64encode(inline.header).decode("ascii") if inline is not None and send_header else ""
        status, detail, *job = self._record(
            keys=[
                keys.job(job_id), keys.job_manifests(job_id), keys.job_tasks(job_id), keys.METRICS,
                keys.job_hosts(job_id), keys.job_running(job_id), keys.job_dispatch(job_id),
                keys.job_manifest_headers(job_id),
            ],  # fmt: skip
            args=[
                task_id,
                descriptor.to_json() if descriptor is not None else "",
                descriptor.added_rows_count if descriptor else 0,
                descriptor.added_bytes if descriptor else 0,
                descriptor.added_files_count if descriptor else 0,
                repr(time.time() if now is None else now),
                inline.digest if inline is not None else "",
                header,
            ],
        )
        return RecordResult(str(status), str(detail), Job.from_hash(pairs(job[0])) if job else None)


def _with_header(descriptor: ManifestDescriptor | None) -> InlineManifest | None:
    """The description's inline manifest when it holds its header (as written; not as read back)."""
    inline = descriptor.inline if descriptor is not None else None
    return inline if inline is not None and inline.header else None
