"""Building the process-wide job service from the settings."""

from __future__ import annotations

import threading

from pyiceberg.table import Table

from app.catalog import get_catalog, load_table
from app.jobs.model import TableRef
from app.jobs.service import JobService
from app.jobs.store import JobStore
from app.settings import Settings, get_settings

_lock = threading.Lock()
_service: JobService | None = None


def build_service(settings: Settings) -> JobService:
    from app.celery_app import DEFAULT_REDIS_URL, CeleryTaskQueue, get_celery

    store = JobStore.from_url(settings.redis_url or DEFAULT_REDIS_URL, settings.job_retention_seconds)

    def load(ref: TableRef) -> Table:
        return load_table(get_catalog(settings, ref.catalog or None), ref.namespace, ref.table)

    return JobService(store, CeleryTaskQueue(get_celery()), load)


def get_service() -> JobService:
    global _service
    with _lock:
        if _service is None:
            _service = build_service(get_settings())
        return _service
