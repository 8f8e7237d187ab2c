"""The distributed snapshot: reserve on the coordinator, write manifests on many hosts, commit once.

1. ``begin_distributed_snapshot`` reserves a snapshot id and a commit uuid on main's head.
2. Each task writes its data files and ONE manifest stamped with the reserved id (sequence number
   left unassigned, inherited at commit) and describes it with a ``ManifestDescriptor``.
3. ``commit_distributed_snapshot`` writes the manifest list (merging small manifests when the table
   asks) and commits it with requirements on the table uuid and main's head; on a conflict it reloads,
   re-parents and retries under the same id; before every attempt and after an unknown outcome it
   looks for the reserved id or the job id among main's ancestors, so a job lands exactly once.
"""

from app.iceberg.commit import CommitOutcome, commit_distributed_snapshot
from app.iceberg.descriptor import ManifestDescriptor
from app.iceberg.snapshot import DistributedSnapshot, begin_distributed_snapshot, check_writable

__all__ = [
    "CommitOutcome",
    "DistributedSnapshot",
    "ManifestDescriptor",
    "begin_distributed_snapshot",
    "check_writable",
    "commit_distributed_snapshot",
]
