"""The job store's running tasks: a worker starts a task (reads its context, marks it running on its
host) and, without an outcome, stops it (it waits for a retry). Recording a manifest or a failure ends
its run too (app/jobs/scripts.py). GetJobStatus counts each host's running tasks from this.

Part of :class:`app.jobs.store.JobStore` (its only Redis client, ``_r``); kept apart so each file reads
as one concern.
"""

from __future__ import annotations

from typing import Any

from app import keys
from app.jobs import scripts
from app.jobs.lazy_scripts import lazy_script
from app.jobs.model import Job, TaskSpec


def pairs(flat: list[str]) -> dict[str, str]:
    """A hash as a script returns HGETALL (field, value, field, value, ...) -> dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RunningStore:
    _r: Any  # the store's Redis client (made by JobStore)

    def _running_script(self, name: str) -> Any:
        return lazy_script(self, scripts, name)

    def task_context(self, job_id: str, task_id: str) -> tuple[Job | None, str | None, TaskSpec | None]:
        """A worker starts a task: the job, the task's recorded manifest and the task's spec, in one round
        trip; the task is marked running on its host unless it is recorded or the job is closed."""
        out = self._running_script("TASK_START")(
            keys=[
                keys.job(job_id), keys.job_manifests(job_id), keys.job_tasks(job_id), keys.job_running(job_id),
                keys.METRICS,
            ],
            args=[task_id],
        )  # fmt: skip
        if not out[0]:
            return None, None, None
        data, manifest, raw = out
        spec = TaskSpec.from_json(task_id, raw) if raw is not None else None
        return Job.from_hash(pairs(data)), manifest, spec

    def add_celery_ids(self, job_id: str, celery_ids: list[str]) -> bool:
        """Count messages published for the job's tasks after its dispatch (a group's hand-back) among
        its Celery ids, which a cancel revokes -> False, adding nothing, when the job is not open."""
        if not celery_ids:
            return True
        return bool(
            self._running_script("ADD_CELERY_IDS")(
                keys=[keys.job(job_id), keys.job_celery_ids(job_id)], args=celery_ids
            )
        )

    def task_stopped(self, job_id: str, task_id: str) -> None:
        """The task stopped running without an outcome (it waits for a retry)."""
        self._running_script("TASK_STOPPED")(keys=[keys.job_running(job_id)], args=[task_id])
