"""Task manifests kept inline (app/iceberg/inline_manifest.py), as the job store hands them back."""

from __future__ import annotations

from pathlib import Path

from pyiceberg.table import Table

from app.iceberg import DistributedSnapshot, ManifestDescriptor
from tests.support.tables import rows, write_csv
from workers.conversion import write_task_manifest

LIMIT = 16 * 1024  # the default of FLOE_INLINE_MANIFEST_BYTES


def through_store(m: ManifestDescriptor) -> ManifestDescriptor:
    """``m`` as JobStore.manifests returns it: its JSON read back, its header found by digest."""
    assert m.inline is not None
    back = ManifestDescriptor.from_json(m.to_json())
    return back.with_header_from({m.inline.digest: m.inline.header})


def inline_task(
    snapshot: DistributedSnapshot, table: Table, where: Path, i: int, n: int = 5
) -> ManifestDescriptor:
    """Task ``t<i>``: ``n`` rows from id ``i * n``, its manifest kept inline."""
    m = write_task_manifest(snapshot, table, [write_csv(where / f"s{i}.csv", rows(i * n, n))], f"t{i}", inline_bytes=LIMIT)
    assert m is not None and m.inline is not None
    return through_store(m)
