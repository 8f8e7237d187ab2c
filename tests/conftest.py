"""Shared fixtures: real catalogs (SQLite always; PostgreSQL when it runs, required under CI)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog

PG_URI = os.environ.get("FLOE_TEST_PG_URI", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@dataclass
class CatalogHandle:
    catalog: Catalog
    properties: dict[str, str]
    namespace: str

    def identifier(self, name: str) -> str:
        return f"{self.namespace}.{name}"


def _postgres_available() -> str | None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG_URI)
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return str(exc).splitlines()[0]


def require_or_skip(reason: str | None, what: str) -> None:
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required under CI but unavailable: {reason}")
    pytest.skip(f"{what} unavailable: {reason}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CatalogHandle]:
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    if request.param == "sqlite":
        props = {"uri": f"sqlite:///{tmp_path / 'catalog.db'}", "warehouse": warehouse.as_uri()}
        name = "floe_test"
    else:
        require_or_skip(_postgres_available(), "PostgreSQL at 127.0.0.1:5432")
        name = f"floe_test_{uuid.uuid4().hex[:8]}"
        props = {"uri": PG_URI, "warehouse": warehouse.as_uri()}
    cat = SqlCatalog(name, **props)
    namespace = f"ns_{uuid.uuid4().hex[:8]}"
    cat.create_namespace(namespace)
    yield CatalogHandle(cat, {"type": "sql", **props, "name": name}, namespace)
    for ident in cat.list_tables(namespace):
        cat.drop_table(ident)
    cat.drop_namespace(namespace)
    cat.engine.dispose()


@pytest.fixture
def sqlite_catalog(tmp_path: Path) -> Iterator[CatalogHandle]:
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    props = {"uri": f"sqlite:///{tmp_path / 'catalog.db'}", "warehouse": warehouse.as_uri()}
    cat = SqlCatalog("floe_test", **props)
    cat.create_namespace("ns")
    yield CatalogHandle(cat, {"type": "sql", **props, "name": "floe_test"}, "ns")
    cat.engine.dispose()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real redis-server on a free port (REDIS_URL is not used: tests flush and kill their server)."""
    from app.stack import start_redis

    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path: Path, redis_server: object) -> Iterator[object]:
    """A real Floe cluster (tests.system.Cluster) on the test's redis-server, namespace ``demo`` made."""
    from tests.system import Cluster

    c = Cluster(tmp_path / "floe", redis_server.url)  # type: ignore[attr-defined]
    c.catalog.create_namespace("demo")
    try:
        yield c
    finally:
        c.stop_all()
