"""The distributed snapshot: reserve on the coordinator, write manifests on many hosts, commit once.

See DESIGN.md "The distributed snapshot" for the protocol and the pyiceberg 0.12 facts it relies on.
"""

from app.iceberg.commit import commit_distributed_snapshot
from app.iceberg.descriptor import ManifestDescriptor
from app.iceberg.snapshot import DistributedSnapshot, begin_distributed_snapshot, check_writable

__all__ = [
    "DistributedSnapshot",
    "ManifestDescriptor",
    "begin_distributed_snapshot",
    "check_writable",
    "commit_distributed_snapshot",
]
