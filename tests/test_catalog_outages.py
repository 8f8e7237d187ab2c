"""A SQL catalog on PostgreSQL whose server restarts, drops connections or cannot be reached.

Found by the chaos case ``postgres_restart``: after PostgreSQL restarted, every Floe process's pooled
catalog connection was dead, and the next catalog call failed with SQLAlchemy's OperationalError —
not a Floe error, so not retried (an ingest task starting then would have failed its job). Now the
pool checks a connection before use, and a database that is down is CatalogUnavailable (retryable).
Each test works in a database of its own, so that it drops no other test's connections.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

from app.catalog import get_catalog, load_table
from app.errors import CatalogUnavailable
from app.settings import Settings
from app.stack import free_port
from tests.support.catalogs import PG_URI, postgres_unavailable, require_or_skip
from tests.support.tables import make_table

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def _admin(sql: str) -> None:
    engine = sqlalchemy.create_engine(PG_URI.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(sql))
    finally:
        engine.dispose()


@pytest.fixture
def database() -> Iterator[str]:
    """The URI of a fresh PostgreSQL database, dropped afterwards."""
    require_or_skip(postgres_unavailable(), "PostgreSQL at 127.0.0.1:5432")
    name = f"floe_outage_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {name}")
    try:
        yield PG_URI.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _settings(tmp_path: Path, uri: str) -> Settings:
    env = {
        "FLOE_HOME": str(tmp_path / "home"),
        "ICEBERG_CATALOG_NAME": f"pg{uuid.uuid4().hex[:8]}",  # a process-wide cache entry of its own
        "ICEBERG_CATALOG_TYPE": "sql",
        "ICEBERG_CATALOG_URI": uri,
        "ICEBERG_WAREHOUSE": (tmp_path / "warehouse").as_uri(),
    }
    return Settings.from_env(env)


def test_a_catalog_whose_connections_the_server_dropped_reconnects(tmp_path: Path, database: str) -> None:
    # Given a catalog that has loaded a table (its pool holds a connection)
    catalog = get_catalog(_settings(tmp_path, database))
    catalog.create_namespace("demo")
    make_table(catalog, "demo.events")
    load_table(catalog, "demo", "events")
    # When the server drops every connection to the database (as a restart does)
    name = database.rsplit("/", 1)[1]
    _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    # Then the next call reconnects instead of failing on the dead connection
    assert load_table(catalog, "demo", "events").name() == ("demo", "events")


def test_a_database_that_is_gone_is_catalog_unavailable(tmp_path: Path, database: str) -> None:
    catalog = get_catalog(_settings(tmp_path, database))
    catalog.create_namespace("demo")
    make_table(catalog, "demo.events")
    name = database.rsplit("/", 1)[1]
    _admin(f"DROP DATABASE {name} WITH (FORCE)")
    with pytest.raises(CatalogUnavailable, match=r"could not load demo\.events: OperationalError"):
        load_table(catalog, "demo", "events")


def test_a_catalog_server_that_cannot_be_reached_is_catalog_unavailable(tmp_path: Path) -> None:
    uri = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(CatalogUnavailable, match=r"cannot be reached: OperationalError"):
        get_catalog(_settings(tmp_path, uri))
