"""Every Redis key template and TTL Floe uses, in one place."""

from __future__ import annotations

PREFIX = "floe"

JOBS_BY_TIME = f"{PREFIX}:jobs"  # zset: job id -> created_at
ACTIVE_JOBS = f"{PREFIX}:jobs:active"  # set of job ids not yet finished
WORKERS = f"{PREFIX}:workers"  # hash: worker id -> last heartbeat (unix seconds)
WORKER_CONCURRENCY = f"{PREFIX}:workers:concurrency"  # hash: worker id -> worker processes it runs
LIVE_SECONDS = 15  # a host is live when its worker heartbeat within this many seconds
SEEN_RECENTLY_SECONDS = 3600  # ListHosts shows the hosts that heartbeat within this many seconds
METRICS = f"{PREFIX}:metrics"  # hash: counter name -> value (cluster-wide, exported by the coordinator)
# upper bounds (seconds) of the commit-duration histogram kept in METRICS
COMMIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_EVENTS = f"{PREFIX}:job-events"  # pub/sub channel: '<id> <state>' of every job whose version changed
# zset: job id -> when its commit landed, until the files it left unreferenced are deleted (a
# coordinator that dies in between leaves the entry for the auto-committer's sweep)
CLEANUP_PENDING = f"{PREFIX}:jobs:cleanup-pending"
# set: ids of jobs with entries of their dispatch list not yet published (app/jobs/dispatch.py)
DISPATCH_PENDING = f"{PREFIX}:jobs:dispatch-pending"
HEARTBEAT_SECONDS = 5.0  # a Celery worker host writes its heartbeat this often (workers/heartbeat.py)


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def job_tasks(job_id: str) -> str:
    """hash: task id -> task spec JSON (host, paths)."""
    return f"{PREFIX}:job:{job_id}:tasks"


def job_manifests(job_id: str) -> str:
    """hash: task id -> manifest description JSON ('' for a task whose sources held no rows)."""
    return f"{PREFIX}:job:{job_id}:manifests"


def job_manifest_headers(job_id: str) -> str:
    """hash: digest -> base64 Avro header of the job's inline task manifests (app/iceberg/inline_manifest.py)."""
    return f"{PREFIX}:job:{job_id}:manifest-headers"


def job_failures(job_id: str) -> str:
    """hash: task id -> failure reason."""
    return f"{PREFIX}:job:{job_id}:failures"


def job_files(job_id: str) -> str:
    """set: every file any task attempt started (data files and manifests), journaled before it is
    created; when the job ends, those no recorded manifest references are orphans and are deleted."""
    return f"{PREFIX}:job:{job_id}:files"


def job_celery_ids(job_id: str) -> str:
    """set: Celery task ids enqueued for the job (revoked when it fails or is cancelled)."""
    return f"{PREFIX}:job:{job_id}:celery"


def job_hosts(job_id: str) -> str:
    """hash: '<host>:total' / '<host>:done' / '<host>:failed' -> the host's task counts."""
    return f"{PREFIX}:job:{job_id}:hosts"


def job_sources(job_id: str) -> str:
    """hash: host -> JSON list of the globs that host plans into tasks."""
    return f"{PREFIX}:job:{job_id}:sources"


def job_plans(job_id: str) -> str:
    """hash: host -> JSON of its registered plan (tasks, files, bytes, note); first plan wins."""
    return f"{PREFIX}:job:{job_id}:plans"


def job_fields(job_id: str) -> str:
    """hash: JSON list of a new column's names (its path) -> JSON {id, type, parent}: the field ids the
    job's tasks reserved for the columns they add (schema mode evolve); first reservation wins."""
    return f"{PREFIX}:job:{job_id}:fields"


def table_field_ids(table_uuid: str) -> str:
    """string: the next field id Floe's jobs hand out for new columns of a table (shared by its jobs)."""
    return f"{PREFIX}:table:{table_uuid}:next-field-id"


# the table's field-id counter is kept this long after its last use (a job lasts at most
# MAX_JOB_TIMEOUT_SECONDS between steps); once it expires the next job starts again above last-column-id
FIELD_IDS_TTL_SECONDS = 30 * 24 * 3600


def job_dispatch(job_id: str) -> str:
    """list: what the job publishes, in order, as chunks of entries separated by line breaks (a chunk
    is published at once): '<host>/<task_id>' for an ingest task (host '' is the shared ingest
    queue), '@<host>' for a host's planning task. The job hash's ``dispatched`` field counts the
    chunks published (each chunk's messages LPUSHed onto their queues atomically with that count)."""
    return f"{PREFIX}:job:{job_id}:dispatch"


def dispatch_lock(job_id: str) -> str:
    """string: the token of the dispatcher publishing the job's entries (a lease, see DISPATCH_LEASE_MS)."""
    return f"{PREFIX}:job:{job_id}:dispatch-lock"


def job_running(job_id: str) -> str:
    """hash: task id -> its host, for each task a worker has started and not yet finished."""
    return f"{PREFIX}:job:{job_id}:running"


def commit_lock(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:commit-lock"


def idempotency(key: str) -> str:
    return f"{PREFIX}:idempotency:{key}"


def committed(job_id: str) -> str:
    """string: the snapshot id a job committed; outlives the job's other keys."""
    return f"{PREFIX}:committed:{job_id}"


def job_keys(job_id: str) -> list[str]:
    """The keys that expire together once a job is finished."""
    return [
        job(job_id),
        job_tasks(job_id),
        job_manifests(job_id),
        job_manifest_headers(job_id),
        job_failures(job_id),
        job_celery_ids(job_id),
        job_files(job_id),
        job_hosts(job_id),
        job_sources(job_id),
        job_plans(job_id),
        job_dispatch(job_id),
        job_running(job_id),
        job_fields(job_id),
    ]


# The commit lock is a lease: held for this long, renewed by its committer every third of it while it
# works (app/jobs/lease.py). A committer that dies leaves its job to beat's auto-committer or a client's
# CommitJob retry once the lease runs out (the snapshot protocol keeps the commit exactly-once).
COMMIT_LEASE_MS = 10 * 1000
# A dispatcher holds a job's dispatch lease for this long, renewed by every batch it publishes; one that
# dies leaves the rest to another coordinator's or beat's sweep once the lease has run out.
DISPATCH_LEASE_MS = 10 * 1000
DISPATCH_BATCH = 500  # entries per chunk of a job's dispatch list (published atomically)
COMMITTED_TTL_FACTOR = 10  # the committed pointer is kept ten retentions long
DEFAULT_JOB_TIMEOUT_SECONDS = 3600
MAX_JOB_TIMEOUT_SECONDS = 7 * 24 * 3600
