"""The job store's field reservations: one field id per new column path of a job (schema mode evolve).

Part of :class:`app.jobs.store.JobStore` (its only Redis client, ``_r``); kept apart so each file reads
as one concern. Why ids are reserved this way: :mod:`app.iceberg.schema_evolution`.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from app import keys
from app.errors import FailedPrecondition, NotFound
from app.iceberg.schema_evolution import MAX_FIELD_ID, FieldRequest, ReservedField


class FieldStore:
    _r: redis.Redis
    _reserve_fields: Any  # the RESERVE_FIELDS script, registered by JobStore

    def reserve_fields(
        self, job_id: str, table_uuid: str, floor: int, requests: list[FieldRequest]
    ) -> list[ReservedField]:
        """A field id per new column path, first reservation wins: every task, on any host, that asks
        for a path gets the id (and type) reserved first. New ids come from the table's counter, shared
        by all jobs on the table, never below ``floor``."""
        if not requests:
            return []
        args: list[Any] = [floor, keys.FIELD_IDS_TTL_SECONDS, MAX_FIELD_ID]
        for r in requests:
            parent = r.parent if isinstance(r.parent, int) else json.dumps(list(r.parent))
            args += [json.dumps(list(r.path)), json.dumps({"type": r.type, "parent": parent})]
        out = [
            str(x)
            for x in self._reserve_fields(
                keys=[keys.job(job_id), keys.job_fields(job_id), keys.table_field_ids(table_uuid)], args=args
            )
        ]
        if out[0] == "unknown":
            raise NotFound(f"job {job_id!r} does not exist")
        if out[0] == "closed":
            raise FailedPrecondition(f"job {job_id} is {out[1]}: it reserves no more columns")
        if out[0] == "overflow":
            raise FailedPrecondition(f"the table's field ids are used up (Iceberg's limit is {MAX_FIELD_ID})")
        return [ReservedField.from_json(r.path, raw) for r, raw in zip(requests, out[1:], strict=True)]

    def reserved_fields(self, job_id: str) -> list[ReservedField]:
        """Every field the job's tasks reserved so far, by id (a parent before its children)."""
        data: dict[str, str] = self._r.hgetall(keys.job_fields(job_id))  # type: ignore[assignment]
        held = [ReservedField.from_json(tuple(json.loads(path)), raw) for path, raw in data.items()]
        return sorted(held, key=lambda f: f.field_id)
