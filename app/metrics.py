"""Prometheus metrics, cluster-wide: counters live in Redis (bumped atomically by whichever process
acts: a worker recording a manifest, a beat tick, a commit), and the coordinator exports them with
the current jobs by state on ``FLOE_METRICS_PORT``."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from app import keys
from app.jobs.store import JobStore

COUNTERS = {
    "manifests_total": "manifests accepted",
    "tasks_done_total": "ingest tasks that recorded a manifest",
    "tasks_failed_total": "ingest tasks that failed",
    "tasks_repeated_total": "ingest task messages run again for a task already recorded (redeliveries)",
    "rows_written_total": "rows written in accepted manifests",
    "bytes_written_total": "bytes of data files in accepted manifests",
    "files_written_total": "data files in accepted manifests",
    "commit_conflict_retries_total": "commit attempts retried after another writer moved the table",
    "watchdog_failed_jobs_total": "jobs the watchdog failed for lack of progress",
    "jobs_completed_total": "jobs that completed",
    "jobs_failed_total": "jobs that failed",
    "jobs_cancelled_total": "jobs that were cancelled",
}


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
        buckets = [(str(b), counters.get(f"commit_seconds_le_{b}", 0.0)) for b in keys.COMMIT_BUCKETS]
        buckets.append(("+Inf", count))
        histogram = HistogramMetricFamily("floe_commit_seconds", "time to commit a job's snapshot")
        histogram.add_metric([], buckets, counters.get("commit_seconds_sum", 0.0))
        yield histogram
        states = GaugeMetricFamily("floe_jobs", "jobs not yet finished, by state", labels=["state"])
        for state, n in self.store.open_job_counts().items():
            states.add_metric([state], n)
        yield states


def start_metrics_server(store: JobStore, port: int) -> None:
    from prometheus_client import REGISTRY, start_http_server

    REGISTRY.register(FloeCollector(store))
    start_http_server(port)
