"""Shared fixtures: real catalogs (SQLite always; PostgreSQL when it runs, required under CI)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyiceberg.catalog.sql import SqlCatalog

from tests.support.catalogs import PG_URI, CatalogHandle, postgres_unavailable, require_or_skip

# fixtures every test module sees: the private redis-server, the API test server, SeaweedFS (S3 + REST),
# a job store on that redis-server (``r``, ``store``)
pytest_plugins = [
    "tests.support.redis_server", "tests.support.api_server", "tests.support.seaweedfs", "tests.support.jobs",
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CatalogHandle]:
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    if request.param == "sqlite":
        props = {"uri": f"sqlite:///{tmp_path / 'catalog.db'}", "warehouse": warehouse.as_uri()}
        name = "floe_test"
    else:
        require_or_skip(postgres_unavailable(), "PostgreSQL at 127.0.0.1:5432")
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
def cluster(tmp_path: Path, redis_server: object) -> Iterator[object]:
    """A real Floe cluster (tests.support.system.Cluster) on the test's redis-server, namespace ``demo`` made."""
    from tests.support.system import Cluster

    c = Cluster(tmp_path / "floe", redis_server.url)  # type: ignore[attr-defined]
    c.catalog.create_namespace("demo")
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture(params=["file-sql", "s3-rest"])
def topology_cluster(request: pytest.FixtureRequest, tmp_path: Path, redis_server: object) -> Iterator[object]:
    """A real Floe cluster on each production topology: SQLite + a file:// warehouse, and SeaweedFS's
    Iceberg REST catalog + S3 object storage (tests.support.seaweedfs); namespace ``demo`` made."""
    from tests.support.system import Cluster

    env = request.getfixturevalue("seaweedfs").env() if request.param == "s3-rest" else None
    c = Cluster(tmp_path / "floe", redis_server.url, catalog_env=env)  # type: ignore[attr-defined]
    c.catalog.create_namespace("demo")
    try:
        yield c
    finally:
        c.stop_all()
