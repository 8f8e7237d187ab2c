"""The Celery boundary recorded instead of published: for tests of the gRPC edge and the job service
where no worker is needed (tests/test_system.py runs the real queue)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from app.jobs.dispatch_store import Message, Outgoing
from app.jobs.model import TaskSpec


@dataclass
class RecordingQueue:
    sent: list[tuple[str, str, str]] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    plans: list[tuple[str, str]] = field(default_factory=list)

    def send_ingest(self, job_id: str, task: TaskSpec) -> str:
        self.sent.append((job_id, task.task_id, task.queue))
        return f"celery-{len(self.sent)}"

    def render(self, job_id: str, entries: list[Outgoing]) -> list[Message]:
        """Records each message as sent (an ingest task in ``sent``, a planning task in ``plans``); the
        dispatcher LPUSHes the returned stand-ins onto test-only lists ``floe-test:<queue>``."""
        out = []
        for entry in entries:
            if entry.task_id:
                celery_id = self.send_ingest(job_id, TaskSpec(entry.task_id, entry.host))
            else:
                celery_id = self.send_plan(job_id, entry.host)
            out.append(Message(f"floe-test:{entry.queue}", json.dumps([job_id, entry.task_id or entry.host]), celery_id))
        return out

    def send_commit(self, job_id: str) -> None:
        self.commits.append(job_id)

    def send_plan(self, job_id: str, host: str) -> str:
        self.plans.append((job_id, host))
        return f"plan-{len(self.plans)}"

    def revoke(self, celery_ids: list[str]) -> None:
        self.revoked.extend(celery_ids)
