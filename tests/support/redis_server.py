"""A real redis-server for tests, on a free port (the launcher itself lives in :mod:`app.stack`).

One policy: every test that asks for ``redis_server`` gets a private server that it may flush, kill
and restart; ``REDIS_URL`` is never used. ``conftest.py`` exposes the fixture to every test module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.stack import RedisProcess, start_redis


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()
