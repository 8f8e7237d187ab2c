"""Prometheus metrics, cluster-wide: counters live in Redis (bumped atomically by whichever process
acts: a worker recording a manifest, a beat tick, a commit), and the coordinator exports them with
the current jobs by state on ``FLOE_METRICS_PORT``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from app import keys

if TYPE_CHECKING:
    from app.jobs.store import JobStore

COMMIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COUNTERS = {
    "manifests_total": "manifests accepted",
    "tasks_done_total": "ingest tasks that recorded a manifest",
    "tasks_failed_total": "ingest tasks that failed",
    "rows_written_total": "rows written in accepted manifests",
    "bytes_written_total": "bytes of data files in accepted manifests",
    "files_written_total": "data files in accepted manifests",
    "commit_conflict_retries_total": "commit attempts retried after another writer moved the table",
    "watchdog_failed_jobs_total": "jobs the watchdog failed for lack of progress",
    "jobs_completed_total": "jobs that completed",
    "jobs_failed_total": "jobs that failed",
    "jobs_cancelled_total": "jobs that were cancelled",
}


def observe_commit(store: JobStore, seconds: float) -> None:
    pipe = store.r.pipeline(transaction=False)
    pipe.hincrbyfloat(keys.METRICS, "commit_seconds_sum", seconds)
    pipe.hincrby(keys.METRICS, "commit_seconds_count", 1)
    for bound in COMMIT_BUCKETS:
        if seconds <= bound:
            pipe.hincrby(keys.METRICS, f"commit_seconds_le_{bound}", 1)
    pipe.execute()


class FloeCollector(Collector):
    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        counters = self.store.counters()
        for name, help_text in COUNTERS.items():
            family = CounterMetricFamily(f"floe_{name.removesuffix('_total')}", help_text)
            family.add_metric([], counters.get(name, 0.0))
            yield family
        count = counters.get("commit_seconds_count", 0.0)
        buckets = [(str(b), counters.get(f"commit_seconds_le_{b}", 0.0)) for b in COMMIT_BUCKETS]
        buckets.append(("+Inf", count))
        histogram = HistogramMetricFamily("floe_commit_seconds", "time to commit a job's snapshot")
        histogram.add_metric([], buckets, counters.get("commit_seconds_sum", 0.0))
        yield histogram
        states = GaugeMetricFamily("floe_jobs", "jobs not yet finished, by state", labels=["state"])
        by_state: dict[str, int] = {"PENDING": 0, "RUNNING": 0, "COMMITTING": 0}
        for job_id in self.store.active_ids():
            state = self.store.r.hget(keys.job(job_id), "state")
            if isinstance(state, str) and state in by_state:
                by_state[state] += 1
        for state, n in by_state.items():
            states.add_metric([state], n)
        yield states


def start_metrics_server(store: JobStore, port: int) -> None:
    from prometheus_client import REGISTRY, start_http_server

    REGISTRY.register(FloeCollector(store))
    start_http_server(port)
