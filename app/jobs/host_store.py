"""The job store's hosts: what each host plans for a job, its task counts, and its worker's heartbeats.

Part of :class:`app.jobs.store.JobStore` (its only Redis client, ``_r``); kept apart so each file reads
as one concern.
"""

from __future__ import annotations

import builtins
import json
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import redis

from app import keys
from app.jobs.model import HostInfo, HostPlan, HostProgress, TaskSpec


class HostStore:
    _r: redis.Redis
    _register_plan: Any  # the REGISTER_PLAN script, registered by JobStore

    def tasks(self, job_id: str) -> builtins.list[TaskSpec]:
        raise NotImplementedError

    # --- hosts planning their sources ------------------------------------------------------------

    def host_sources(self, job_id: str, host: str) -> tuple[str, ...] | None:
        """The globs ``host`` plans for the job (None when the job gave it none)."""
        raw = self._r.hget(keys.job_sources(job_id), host)
        return tuple(json.loads(raw)) if raw else None  # type: ignore[arg-type]

    def sources_by_host(self, job_id: str) -> dict[str, tuple[str, ...]]:
        data: dict[str, str] = self._r.hgetall(keys.job_sources(job_id))  # type: ignore[assignment]
        return {host: tuple(json.loads(globs)) for host, globs in data.items()}

    def register_plan(
        self, job_id: str, host: str, plan: HostPlan, tasks: list[TaskSpec], now: float | None = None
    ) -> tuple[str, str]:
        """Record ``host``'s plan and its tasks once (first plan wins). -> (outcome, job state);
        outcome: registered | already | closed | unknown."""
        args: list[Any] = [repr(time.time() if now is None else now), host, plan.to_json()]
        for t in tasks:
            args += [t.task_id, t.to_json()]
        outcome, state = self._register_plan(
            keys=[
                keys.job(job_id), keys.job_tasks(job_id), keys.job_hosts(job_id), keys.job_plans(job_id),
                keys.job_dispatch(job_id), keys.DISPATCH_PENDING,
            ],
            args=args,
        )  # fmt: skip
        return str(outcome), str(state)

    def plans(self, job_id: str) -> dict[str, HostPlan]:
        data: dict[str, str] = self._r.hgetall(keys.job_plans(job_id))  # type: ignore[assignment]
        return {host: HostPlan.from_json(raw) for host, raw in data.items()}

    def host_tasks(self, job_id: str, host: str) -> builtins.list[TaskSpec]:
        return [t for t in self.tasks(job_id) if t.host == host]

    def host_progress(self, job_id: str) -> builtins.list[HostProgress]:
        """Every host the job has sources or tasks on, with its plan and task counts."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(keys.job_hosts(job_id))
        pipe.hkeys(keys.job_sources(job_id))
        pipe.hgetall(keys.job_plans(job_id))
        pipe.hvals(keys.job_running(job_id))
        counts, sourced, plans, running_on = pipe.execute()
        running = Counter(running_on)
        names = {field.rpartition(":")[0] for field in counts} | set(sourced) | set(plans)
        out = []
        for host in sorted(names):
            def n(what: str, host: str = host) -> int:
                return int(counts.get(f"{host}:{what}", 0))

            plan = HostPlan.from_json(plans[host]) if host in plans else None
            out.append(
                HostProgress(host, host in sourced, plan, n("total"), n("done"), n("failed"), running[host])
            )
        return out

    # --- worker heartbeats ----------------------------------------------------------------------

    def worker_heartbeat(self, worker_id: str, now: float | None = None, concurrency: int = 0) -> None:
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(keys.WORKERS, worker_id, repr(time.time() if now is None else now))
        if concurrency:
            pipe.hset(keys.WORKER_CONCURRENCY, worker_id, str(concurrency))
        pipe.execute()

    def hosts(self, names: Iterable[str] | None = None) -> builtins.list[HostInfo]:
        """Every host that ever heartbeat (or just ``names``, unknown ones included), by name."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(keys.WORKERS)
        pipe.hgetall(keys.WORKER_CONCURRENCY)
        beats, concurrency = pipe.execute()
        wanted = sorted(beats) if names is None else sorted(set(names))
        return [
            HostInfo(h, float(beats[h]) if h in beats else None, int(concurrency.get(h, 0))) for h in wanted
        ]
