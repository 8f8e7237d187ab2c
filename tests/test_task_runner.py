"""The task body rides out a Redis outage instead of handing the retry to Celery (which needs Redis)."""

from __future__ import annotations

import pytest
import redis

from workers.task_runner import JobTables, through_outage


def test_through_outage_retries_until_redis_answers() -> None:
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise redis.ConnectionError("Error 111 connecting: Connection refused")
        return "recorded"

    assert through_outage(flaky, "recording", budget=10) == "recorded"
    assert calls["n"] == 3


def test_through_outage_gives_up_after_its_budget_and_passes_other_errors() -> None:
    def down() -> None:
        raise redis.TimeoutError("timed out")

    with pytest.raises(redis.TimeoutError):
        through_outage(down, "recording", budget=0.3)

    def broken() -> None:
        raise ValueError("not an outage")

    with pytest.raises(ValueError, match="not an outage"):
        through_outage(broken, "recording", budget=10)


def test_job_tables_load_each_job_once_and_keep_the_most_recent() -> None:
    loads: list[str] = []

    def loader(name: str):  # type: ignore[no-untyped-def]
        def load() -> object:
            loads.append(name)
            return object()

        return load

    tables = JobTables(limit=2)
    a = tables.get("job-a", loader("a"))
    assert tables.get("job-a", loader("a")) is a  # a job's later tasks reuse its table
    tables.get("job-b", loader("b"))
    assert tables.get("job-a", loader("a")) is a  # a was used last: b is the oldest now
    tables.get("job-c", loader("c"))  # evicts b
    tables.get("job-b", loader("b"))
    assert loads == ["a", "b", "c", "b"]
