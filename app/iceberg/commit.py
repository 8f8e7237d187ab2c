"""Committing every manifest of a distributed snapshot as ONE new snapshot on main, exactly once.

Each attempt reloads the table, looks for the reserved snapshot among main's ancestors (a retry
after a crash or a lost response returns the id it finds), re-parents onto main's head, rebuilds
the manifests from their descriptions (pyiceberg's manifest-list writer mutates what it is given),
writes a manifest list and calls ``commit_table`` with ``AssertTableUUID`` and
``AssertRefSnapshotId(main == parent)``. A conflict retries with backoff under the table's
``commit.retry.*`` properties; an unknown outcome deletes nothing.

When the tasks' descriptors carry a schema change (schema mode evolve), each attempt applies it to
the table's schema as it is then and adds that schema, made current, in the same ``commit_table`` call
as the snapshot, under ``AssertCurrentSchemaId`` and ``AssertLastAssignedFieldId``: another writer's
schema change makes the attempt conflict and the next one rebases over it
(:mod:`app.iceberg.schema_evolution`). When the rebase merges one of the job's new columns into another
writer's of the same name, the attempt first rewrites the job's data files carrying the old ids and
commits rewritten manifests (:mod:`app.iceberg.field_remap`); the outcome lists the replaced originals for
the caller to delete, and an attempt the catalog refuses deletes its copies.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.io import FileIO
from pyiceberg.manifest import UNASSIGNED_SEQ, ManifestFile, write_manifest_list
from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.update import (
    AddSnapshotUpdate,
    AssertRefSnapshotId,
    AssertTableUUID,
    SetSnapshotRefUpdate,
)

from app.errors import (
    CatalogUnavailable,
    CommitConflict,
    CommitStateUnknown,
    FailedPrecondition,
    InvalidArgument,
)
from app.iceberg.descriptor import ManifestDescriptor
from app.iceberg.field_remap import Rewrite, replaced_files, rewrite_remapped
from app.iceberg.files import delete_quietly
from app.iceberg.inline_manifest import InlineManifest, InlineManifestIO, write_file
from app.iceberg.merge import MergePolicy, merge_manifests
from app.iceberg.schema_evolution import SchemaChange, SchemaCommit, plan_schema_commit
from app.iceberg.snapshot import DistributedSnapshot, check_writable
from app.iceberg.summary import COMMIT_UUID_KEY, JOB_ID_KEY, build_summary, check_extra_properties
from app.iceberg.unavailable import CATALOG_UNAVAILABLE
from app.values import int_property

log = logging.getLogger(__name__)

# after sending the commit, these leave its outcome unknown: the table is reloaded to find out
UNKNOWN_OUTCOME: tuple[type[Exception], ...] = (CommitStateUnknownException, *CATALOG_UNAVAILABLE)


@dataclass(frozen=True)
class CommitOutcome:
    snapshot_id: int  # the committed snapshot (the reserved id)
    attempts: int  # catalog commit calls made by this call (0: found already committed)
    unreferenced: tuple[str, ...]  # worker manifests the snapshot does not reference: the caller deletes them
    # original data files the commit replaced by copies with remapped field ids (and copies it does not
    # reference, for a commit found landed): the caller deletes them with ``unreferenced``
    replaced: tuple[str, ...] = ()

    @property
    def to_delete(self) -> list[str]:
        return [*self.unreferenced, *self.replaced]


@dataclass(frozen=True)
class RetryPolicy:
    num_retries: int
    min_wait_ms: int
    max_wait_ms: int
    total_timeout_ms: int

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> RetryPolicy:
        return cls(
            num_retries=int_property(props, "commit.retry.num-retries", 4, minimum=0),
            min_wait_ms=int_property(props, "commit.retry.min-wait-ms", 100, minimum=0),
            max_wait_ms=int_property(props, "commit.retry.max-wait-ms", 60_000, minimum=0),
            total_timeout_ms=int_property(props, "commit.retry.total-timeout-ms", 1_800_000, minimum=0),
        )

    def wait_seconds(self, attempt: int) -> float:
        base = min(self.max_wait_ms, self.min_wait_ms * (2**attempt))
        return (base * (0.5 + random.random() / 2)) / 1000.0


def find_committed(table: Table, snapshot: DistributedSnapshot, job_id: str | None = None) -> Snapshot | None:
    """The snapshot that committed this reservation, if it is among main's ancestors."""
    metadata = table.metadata
    current = metadata.current_snapshot()
    seen: set[int] = set()
    while current is not None and current.snapshot_id not in seen:
        seen.add(current.snapshot_id)
        summary = current.summary
        if current.snapshot_id == snapshot.snapshot_id:
            return current
        if summary is not None and summary.get(COMMIT_UUID_KEY) == snapshot.commit_uuid:
            return current
        if job_id and summary is not None and summary.get(JOB_ID_KEY) == job_id:
            return current
        if current.parent_snapshot_id is None:
            break
        current = metadata.snapshot_by_id(current.parent_snapshot_id)
    return None


def _validate(snapshot: DistributedSnapshot, manifests: list[ManifestDescriptor]) -> None:
    if not manifests:
        raise InvalidArgument("nothing to commit: no manifests were given")
    paths: set[str] = set()
    for m in manifests:
        if m.snapshot_id != snapshot.snapshot_id or m.commit_uuid != snapshot.commit_uuid:
            raise InvalidArgument(
                f"manifest {m.manifest_path} of task {m.task_id!r} belongs to snapshot {m.snapshot_id} "
                f"(commit {m.commit_uuid}), not to {snapshot.snapshot_id} (commit {snapshot.commit_uuid})"
            )
        if m.manifest_path in paths:
            raise InvalidArgument(f"manifest {m.manifest_path} is listed twice")
        paths.add(m.manifest_path)
        if m.inline is not None and not m.inline.header:
            raise FailedPrecondition(
                f"manifest {m.manifest_path} of task {m.task_id!r} is kept in the job store, but its header "
                f"(digest {m.inline.digest}) is missing or damaged there; the job cannot be committed"
            )


def _inline(manifests: list[ManifestDescriptor]) -> dict[str, InlineManifest]:
    """The job's inline manifests by path (app/iceberg/inline_manifest.py)."""
    return {m.manifest_path: m.inline for m in manifests if m.inline is not None}


def _fresh_manifests(
    snapshot: DistributedSnapshot, manifests: list[ManifestDescriptor]
) -> list[ManifestFile]:
    files = [m.to_manifest_file() for m in manifests]
    for f in files:
        # The v1 list writer checks nothing and the v2 one only unassigned ones: check here.
        if f.added_snapshot_id != snapshot.snapshot_id or f.sequence_number != UNASSIGNED_SEQ:
            raise InvalidArgument(f"manifest {f.manifest_path} is not an unstamped manifest of this snapshot")
    return files


def commit_distributed_snapshot(
    table: Table,
    snapshot: DistributedSnapshot,
    manifests: list[ManifestDescriptor],
    summary: Mapping[str, str] | None = None,
) -> CommitOutcome:
    """Commit every manifest as one new snapshot on main; return what happened.

    Idempotent: when the reservation is already among main's ancestors its id is returned and
    nothing new is written. Nothing is deleted here: the outcome lists the worker manifests the
    committed snapshot does not reference (merged into larger ones), and the caller deletes them once
    it has recorded the outcome (the snapshot is on main either way).
    """
    extra = dict(summary or {})
    check_extra_properties(extra)
    extra[COMMIT_UUID_KEY] = snapshot.commit_uuid
    _validate(snapshot, manifests)
    change = SchemaChange.union(m.schema_change for m in manifests)
    job_id = extra.get(JOB_ID_KEY)
    started = time.monotonic()
    attempt = 0
    while True:
        table = _reload(table)
        if str(table.metadata.table_uuid) != snapshot.table_uuid:
            raise FailedPrecondition(
                f"table {'.'.join(table.name())} was replaced since the snapshot was reserved "
                f"(uuid {table.metadata.table_uuid}, reserved against {snapshot.table_uuid})"
            )
        if (done := find_committed(table, snapshot, job_id)) is not None:
            return _landed(table, done, manifests, attempt)
        if table.metadata.snapshot_by_id(snapshot.snapshot_id) is not None:
            raise FailedPrecondition(
                f"snapshot id {snapshot.snapshot_id} exists in the table but is not on main; refusing to reuse it"
            )
        check_writable(table)
        retry = RetryPolicy.from_properties(table.metadata.properties)
        try:
            outcome = _attempt(table, snapshot, manifests, extra, attempt, change)
        except CommitFailedException as exc:
            elapsed_ms = (time.monotonic() - started) * 1000
            if attempt >= retry.num_retries or elapsed_ms >= retry.total_timeout_ms:
                raise CommitConflict(
                    f"commit of snapshot {snapshot.snapshot_id} kept conflicting with other writers after "
                    f"{attempt + 1} attempts: {exc}",
                    attempts=attempt + 1,
                ) from exc
            log.info("commit conflict on attempt %d, rebasing: %s", attempt + 1, exc)
            time.sleep(retry.wait_seconds(attempt))
            attempt += 1
            continue
        except UNKNOWN_OUTCOME as exc:
            # the request may have landed (Java's client treats a 5xx on commit the same way)
            return _resolve_unknown(table, snapshot, manifests, job_id, exc, attempt + 1)
        return outcome


def _landed(table: Table, done: Snapshot, manifests: list[ManifestDescriptor], attempts: int) -> CommitOutcome:
    return CommitOutcome(
        done.snapshot_id,
        attempts,
        tuple(unreferenced_manifests(table, done, manifests)),
        tuple(replaced_files(table, done, manifests)),
    )


def _reload(table: Table) -> Table:
    try:
        return table.catalog.load_table(table.name())
    except CATALOG_UNAVAILABLE as exc:
        raise CatalogUnavailable(
            f"catalog {table.catalog.name!r} could not load {'.'.join(table.name())}: {type(exc).__name__}: {exc}"
        ) from exc


def _resolve_unknown(
    table: Table,
    snapshot: DistributedSnapshot,
    manifests: list[ManifestDescriptor],
    job_id: str | None,
    exc: BaseException,
    attempts: int,
) -> CommitOutcome:
    try:
        table = _reload(table)
    except Exception as reload_exc:  # noqa: BLE001 - the outcome stays unknown either way
        raise CommitStateUnknown(
            f"commit of snapshot {snapshot.snapshot_id} has an unknown outcome ({exc}); the table could not "
            f"be reloaded to check ({reload_exc}); nothing was deleted"
        ) from exc
    if (done := find_committed(table, snapshot, job_id)) is not None:
        return _landed(table, done, manifests, attempts)
    raise CommitStateUnknown(
        f"commit of snapshot {snapshot.snapshot_id} has an unknown outcome ({exc}) and it is not on main yet; "
        "nothing was deleted; retry the commit"
    ) from exc


def _attempt(
    table: Table,
    snapshot: DistributedSnapshot,
    manifests: list[ManifestDescriptor],
    extra: Mapping[str, str],
    attempt: int,
    change: SchemaChange | None = None,
) -> CommitOutcome:
    """One commit attempt. Data files whose field ids the schema commit remaps are rewritten first
    (:mod:`app.iceberg.field_remap`); an attempt that does not land deletes what it wrote."""
    metadata = table.metadata
    evolution = plan_schema_commit(metadata, change or SchemaChange())  # on the schema as it is now
    io = table.io
    inline = _inline(manifests)
    reads = InlineManifestIO(io, inline) if inline else io  # the job's manifests, inline ones included
    rewrite = Rewrite(manifests)
    if evolution.remap:
        rewrite = rewrite_remapped(table, snapshot.snapshot_id, manifests, evolution.remap, evolution.schema, reads)
    written = _Written(list(rewrite.written))
    try:
        merged = _commit(table, snapshot, rewrite.manifests, extra, attempt, evolution, written, reads, inline)
    except CommitFailedException:
        # The catalog refused this attempt: its manifest list, merged manifests and copies are ours alone.
        delete_quietly(io, written.paths)
        raise
    except BaseException:
        if not written.sent:  # it never reached the catalog; once sent, it may have landed: keep all
            delete_quietly(io, written.paths)
        raise
    ours = _files(manifests) | _files(rewrite.manifests)
    merged_away = ours - {m.manifest_path for m in merged}
    return CommitOutcome(snapshot.snapshot_id, attempt + 1, tuple(sorted(merged_away)), tuple(rewrite.replaced))


@dataclass
class _Written:
    paths: list[str]  # the files an attempt wrote (or began)
    sent: bool = False  # whether the catalog call was made


def _commit(
    table: Table,
    snapshot: DistributedSnapshot,
    manifests: list[ManifestDescriptor],
    extra: Mapping[str, str],
    attempt: int,
    evolution: SchemaCommit,
    written: _Written,
    reads: FileIO,
    inline: Mapping[str, InlineManifest],
) -> list[ManifestFile]:
    """Write the manifest list (merging manifests) and commit it: the manifests it lists. Inline
    manifests are read through ``reads``; one the list references unmerged is written under a name of
    this attempt (listed in ``written``, as merged manifests are)."""
    metadata = table.metadata
    io = table.io
    parent = metadata.current_snapshot()
    parent_id = parent.snapshot_id if parent is not None else None
    sequence_number = metadata.next_sequence_number()
    existing = list(parent.manifests(io)) if parent is not None else []
    policy = MergePolicy.from_properties(metadata.properties)
    merged = merge_manifests(
        table,
        reads,
        snapshot.snapshot_id,
        _fresh_manifests(snapshot, manifests),
        existing,
        policy,
        name_prefix=f"{snapshot.commit_uuid}-merged-a{attempt}",
        schema=evolution.schema,
    )
    written.paths += merged.written
    by_path = {m.manifest_path: m for m in manifests}
    for i, m in enumerate(merged.manifests):
        if (kept := inline.get(m.manifest_path)) is not None:
            # listed unmerged: written under a name of this attempt's (as merged manifests are), so the
            # task's own path is never a file and an attempt that does not land deletes only its own
            path = table.location_provider().new_metadata_location(
                f"{snapshot.commit_uuid}-inline-a{attempt}-{len(written.paths)}.avro"
            )
            written.paths.append(path)
            write_file(io, path, kept.file_bytes())
            merged.manifests[i] = replace(by_path[m.manifest_path], manifest_path=path, inline=None).to_manifest_file()
    list_path = table.location_provider().new_metadata_location(
        f"snap-{snapshot.snapshot_id}-{attempt}-{snapshot.commit_uuid}.avro"
    )
    written.paths.append(list_path)
    with write_manifest_list(
        format_version=metadata.format_version,  # type: ignore[arg-type]
        output_file=io.new_output(list_path),
        snapshot_id=snapshot.snapshot_id,
        parent_snapshot_id=parent_id,
        sequence_number=sequence_number,
        avro_compression=metadata.properties.get("write.avro.compression-codec", "gzip"),  # type: ignore[arg-type]
    ) as writer:
        writer.add_manifests(merged.manifests)
    new_snapshot = Snapshot(
        snapshot_id=snapshot.snapshot_id,
        parent_snapshot_id=parent_id,
        manifest_list=list_path,
        sequence_number=sequence_number,
        summary=build_summary(manifests, parent, metadata.properties, extra),
        schema_id=evolution.schema.schema_id,
    )
    written.sent = True
    table.catalog.commit_table(
        table,
        requirements=(
            AssertTableUUID(uuid=metadata.table_uuid),
            AssertRefSnapshotId(snapshot_id=parent_id, ref=MAIN_BRANCH),
            *evolution.requirements,
        ),
        updates=(
            *evolution.updates,
            AddSnapshotUpdate(snapshot=new_snapshot),
            SetSnapshotRefUpdate(
                snapshot_id=snapshot.snapshot_id,
                parent_snapshot_id=parent_id,
                ref_name=MAIN_BRANCH,
                type=SnapshotRefType.BRANCH,
                max_ref_age_ms=None,
                max_snapshot_age_ms=None,
                min_snapshots_to_keep=None,
            ),
        ),
    )
    return merged.manifests


def unreferenced_files(table: Table, committed: Snapshot, manifests: list[ManifestDescriptor]) -> list[str]:
    """What the job left that ``committed`` does not reference: merged-away worker manifests, and the data
    files it replaced by copies with remapped field ids (with copies it does not reference)."""
    return [*unreferenced_manifests(table, committed, manifests), *replaced_files(table, committed, manifests)]


def unreferenced_manifests(table: Table, committed: Snapshot, manifests: list[ManifestDescriptor]) -> list[str]:
    """The worker manifests ``committed``'s manifest list does not reference (none if it is unreadable)."""
    try:
        referenced = {m.manifest_path for m in committed.manifests(table.io)}
    except Exception:  # noqa: BLE001 - cleanup is best effort; an unreadable list means keep everything
        log.warning(
            "cannot read manifest list of snapshot %s; keeping worker manifests", committed.snapshot_id
        )
        return []
    return sorted(_files(manifests) - referenced)


def _files(manifests: list[ManifestDescriptor]) -> set[str]:
    """The paths of the manifests that are files (an inline manifest's own path never is one)."""
    return {m.manifest_path for m in manifests if m.inline is None}
