"""A real redis-server for tests (the launcher itself lives in :mod:`app.stack`).

Use the fixtures by importing them into a test module or a conftest::

    from tests.redis_server import redis_server  # noqa: F401  (a pytest fixture)

``redis_server`` starts a private server per test; ``redis_server_session`` one per session.
When ``REDIS_URL`` is set, both yield an :class:`ExternalRedis` with just ``.url`` (tests that
need ``kill()``/``restart()`` call :func:`app.stack.start_redis` themselves).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from app.stack import RedisProcess, start_redis


@dataclass(frozen=True)
class ExternalRedis:
    """A Redis this test run did not start (``REDIS_URL``); only its URL is known."""

    url: str


@contextlib.contextmanager
def redis_server_for(
    tmp_path_factory: pytest.TempPathFactory, appendonly: bool = True, password: str | None = None
) -> Iterator[RedisProcess | ExternalRedis]:
    """``REDIS_URL``'s server if set, else a fresh redis-server that is stopped on exit."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield ExternalRedis(external)
        return
    server = start_redis(tmp_path_factory.mktemp("redis"), appendonly=appendonly, password=password)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess | ExternalRedis]:
    with redis_server_for(tmp_path_factory) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess | ExternalRedis]:
    with redis_server_for(tmp_path_factory) as server:
        yield server
