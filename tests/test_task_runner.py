"""The task body rides out a Redis outage instead of handing the retry to Celery (which needs Redis)."""

from __future__ import annotations

import pytest
import redis

from workers.task_runner import through_outage


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
