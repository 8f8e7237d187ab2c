"""app.settings.Settings.from_env and the write-buffer budget: defaults, mapping, precise refusals."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import ConfigError, InvalidArgument
from app.jobs.validation import check_id
from app.settings import (
    CATALOG_TYPES,
    DEFAULT_GROUP_BUDGET_MS,
    DEFAULT_INLINE_MANIFEST_BYTES,
    DEFAULT_WRITE_BUFFER_BYTES,
    Settings,
    get_settings,
    reset_settings,
)
from tests.support.catalogs import CatalogHandle
from tests.support.tables import make_table
from workers.datafiles import DataFileWriter


@pytest.fixture(autouse=True)
def no_pyiceberg_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No ~/.pyiceberg.yaml, PYICEBERG_* variable or cwd config leaks in from the machine."""
    conf = tmp_path / "pyiceberg-home"
    conf.mkdir()
    for name in list(os.environ):
        if name.startswith(("PYICEBERG_", "ICEBERG_", "FLOE_", "WORKER_", "COORDINATOR_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PYICEBERG_HOME", str(conf))
    monkeypatch.setenv("HOME", str(conf))
    monkeypatch.chdir(conf)
    reset_settings()
    yield conf
    reset_settings()


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"FLOE_HOME": str(tmp_path / "home"), **env})


def refused(tmp_path: Path, message: str, **env: str) -> ConfigError:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$") as info:
        settings(tmp_path, **env)
    assert isinstance(info.value, InvalidArgument) and info.value.grpc_code == "INVALID_ARGUMENT"
    return info.value


# --- the embedded default -------------------------------------------------------------------------


def test_embedded_default_is_sqlite_and_a_file_warehouse_under_floe_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    s = settings(tmp_path)
    assert s.home == home
    assert s.catalog_name == "default"
    assert s.catalog_properties == {
        "type": "sql",
        "uri": f"sqlite:///{home / 'catalog.db'}",
        "warehouse": (home / "warehouse").as_uri(),
    }
    assert (home / "warehouse").is_dir()  # created so the first table can be written
    # and the other defaults
    assert s.redis_url is None
    assert s.coordinator_address == "[::]:50051"
    assert s.worker_address == "[::]:50052"
    assert s.worker_id is None and s.worker_data_base is None
    assert s.job_retention_seconds == 7 * 24 * 3600
    assert s.visibility_timeout_seconds == 3600
    assert s.watchdog_interval_seconds == 5


def test_floe_home_defaults_to_dot_floe_in_the_working_directory(no_pyiceberg_config: Path) -> None:
    s = Settings.from_env({})
    assert s.home == no_pyiceberg_config / ".floe"
    assert s.catalog_properties["uri"] == f"sqlite:///{no_pyiceberg_config / '.floe' / 'catalog.db'}"


def test_relative_floe_home_becomes_absolute(no_pyiceberg_config: Path) -> None:
    s = Settings.from_env({"FLOE_HOME": "rel/home"})
    assert s.home == no_pyiceberg_config / "rel" / "home"
    assert s.home.is_absolute()


def test_empty_values_mean_unset(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        ICEBERG_CATALOG_TYPE="",
        WORKER_ID="",
        REDIS_URL="",
        COORDINATOR_ADDRESS="",
        FLOE_JOB_RETENTION_SECONDS="",
    )
    assert s.catalog_properties["type"] == "sql"
    assert s.worker_id is None and s.redis_url is None
    assert s.coordinator_address == "[::]:50051"
    assert s.job_retention_seconds == 7 * 24 * 3600


def test_get_settings_is_cached_until_reset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOE_HOME", str(tmp_path / "one"))
    first = get_settings()
    monkeypatch.setenv("FLOE_HOME", str(tmp_path / "two"))
    assert get_settings() is first
    reset_settings()
    assert get_settings().home == tmp_path / "two"


# --- ICEBERG_* mapping ----------------------------------------------------------------------------


def test_iceberg_variables_map_onto_catalog_properties(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        ICEBERG_CATALOG_NAME="example",
        ICEBERG_CATALOG_TYPE="REST",
        ICEBERG_CATALOG_URI="http://localhost:8181",
        ICEBERG_WAREHOUSE="s3://warehouse/",
    )
    assert s.catalog_name == "example"
    assert s.catalog_properties == {
        "type": "rest",
        "uri": "http://localhost:8181",
        "warehouse": "s3://warehouse/",
    }
    assert not (tmp_path / "home").exists()  # no embedded default was set up


def test_sql_catalog_with_uri(tmp_path: Path) -> None:
    s = settings(tmp_path, ICEBERG_CATALOG_TYPE="sql", ICEBERG_CATALOG_URI="postgresql+psycopg2://u@h/db")
    assert s.catalog_properties == {"type": "sql", "uri": "postgresql+psycopg2://u@h/db"}


@pytest.mark.parametrize("ctype", CATALOG_TYPES)
def test_every_known_catalog_type_is_accepted(tmp_path: Path, ctype: str) -> None:
    s = settings(tmp_path, ICEBERG_CATALOG_TYPE=ctype, ICEBERG_CATALOG_URI="x://y")
    assert s.catalog_properties["type"] == ctype


def test_pyiceberg_configuration_replaces_the_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYICEBERG_CATALOG__PROD__URI", "http://rest:8181")
    s = settings(tmp_path, ICEBERG_CATALOG_NAME="prod")
    assert s.catalog_name == "prod"
    assert s.catalog_properties == {}  # pyiceberg's own configuration for 'prod' is used as is


def test_pyiceberg_yaml_uri_satisfies_a_sql_catalog(tmp_path: Path, no_pyiceberg_config: Path) -> None:
    (no_pyiceberg_config / ".pyiceberg.yaml").write_text(
        "catalog:\n  default:\n    uri: sqlite:///elsewhere.db\n"
    )
    s = settings(tmp_path, ICEBERG_CATALOG_TYPE="sql")
    assert s.catalog_properties == {"type": "sql"}


# --- refusals -------------------------------------------------------------------------------------


def test_unknown_catalog_type(tmp_path: Path) -> None:
    refused(
        tmp_path,
        "ICEBERG_CATALOG_TYPE='nessie' is not a catalog type pyiceberg knows "
        "(one of rest, sql, hive, glue, dynamodb, in-memory, bigquery)",
        ICEBERG_CATALOG_TYPE="nessie",
    )


def test_sql_catalog_without_uri(tmp_path: Path) -> None:
    refused(
        tmp_path,
        "ICEBERG_CATALOG_TYPE=sql needs ICEBERG_CATALOG_URI (an SQLAlchemy URL)",
        ICEBERG_CATALOG_TYPE="sql",
    )
    refused(
        tmp_path,
        "ICEBERG_CATALOG_TYPE=sql needs ICEBERG_CATALOG_URI (an SQLAlchemy URL)",
        ICEBERG_CATALOG_TYPE="SQL",
        ICEBERG_WAREHOUSE="file:///w",
    )


@pytest.mark.parametrize("value", ["abc", ":99999", "host:", "host:port", ":-1", "127.0.0.1:65536", ":"])
def test_malformed_coordinator_address(tmp_path: Path, value: str) -> None:
    refused(
        tmp_path,
        f"COORDINATOR_ADDRESS={value!r} is not an address of the form [host]:port",
        COORDINATOR_ADDRESS=value,
    )


def test_malformed_worker_address(tmp_path: Path) -> None:
    refused(
        tmp_path,
        "WORKER_ADDRESS='localhost' is not an address of the form [host]:port",
        WORKER_ADDRESS="localhost",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (":50051", "[::]:50051"),
        ("0.0.0.0:1", "0.0.0.0:1"),
        ("localhost:65535", "localhost:65535"),
        ("[::1]:50051", "[::1]:50051"),
        (":0", "[::]:0"),
    ],
)
def test_good_addresses(tmp_path: Path, value: str, expected: str) -> None:
    assert settings(tmp_path, COORDINATOR_ADDRESS=value).coordinator_address == expected
    assert settings(tmp_path, WORKER_ADDRESS=value).worker_address == expected


@pytest.mark.parametrize("value", ["a/b", "host 1", "w:1", "x*", "a" * 129])
def test_worker_id_that_cannot_name_a_queue(tmp_path: Path, value: str) -> None:
    refused(
        tmp_path,
        f"WORKER_ID={value!r} may hold only letters, digits, '-', '_' and '.' (it names a queue)",
        WORKER_ID=value,
    )


def test_good_worker_id_and_data_base(tmp_path: Path) -> None:
    s = settings(tmp_path, WORKER_ID="worker-1.a_b", WORKER_DATA_BASE="data")
    assert s.worker_id == "worker-1.a_b"
    assert s.worker_data_base is not None and s.worker_data_base.is_absolute()


@pytest.mark.parametrize("value", ["wörker", "w\u00b2", "host-\u0661"])
def test_worker_id_accepted_only_if_tasks_can_name_it_as_host(tmp_path: Path, value: str) -> None:
    try:
        s = settings(tmp_path, WORKER_ID=value)
    except ConfigError:
        return  # refused at start-up: consistent
    # accepted: then a job must be able to route a task to it
    check_id(s.worker_id or "", "tasks[0].host")


@pytest.mark.parametrize(
    "name",
    ["FLOE_JOB_RETENTION_SECONDS", "FLOE_VISIBILITY_TIMEOUT_SECONDS", "FLOE_WATCHDOG_INTERVAL_SECONDS"],
)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "{name}='x' is not an integer"),
        ("1.5", "{name}='1.5' is not an integer"),
        ("0", "{name}=0 must be at least 1"),
        ("-5", "{name}=-5 must be at least 1"),
    ],
)
def test_bad_integer_settings(tmp_path: Path, name: str, value: str, message: str) -> None:
    refused(tmp_path, message.format(name=name), **{name: value})


def test_integer_settings(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        FLOE_JOB_RETENTION_SECONDS="60",
        FLOE_VISIBILITY_TIMEOUT_SECONDS="7200",
        FLOE_WATCHDOG_INTERVAL_SECONDS="1",
    )
    assert (s.job_retention_seconds, s.visibility_timeout_seconds, s.watchdog_interval_seconds) == (
        60,
        7200,
        1,
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "FLOE_GROUP_BUDGET_MS='x' is not an integer"),
        ("0.5", "FLOE_GROUP_BUDGET_MS='0.5' is not an integer"),
        ("-1", "FLOE_GROUP_BUDGET_MS=-1 must be at least 0"),
    ],
)
def test_bad_group_budget(tmp_path: Path, value: str, message: str) -> None:
    refused(tmp_path, message, FLOE_GROUP_BUDGET_MS=value)


def test_group_budget(tmp_path: Path) -> None:
    assert settings(tmp_path).group_budget_ms == DEFAULT_GROUP_BUDGET_MS == 1000
    assert settings(tmp_path, FLOE_GROUP_BUDGET_MS="0").group_budget_ms == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "FLOE_INLINE_MANIFEST_BYTES='x' is not an integer"),
        ("-1", "FLOE_INLINE_MANIFEST_BYTES=-1 must be at least 0"),
        (
            "1048577",
            "FLOE_INLINE_MANIFEST_BYTES=1048577 is too large: at most 1048576 (a manifest kept in Redis is read "
            "back with every other one of its job at commit; a larger one is better written as a file)",
        ),
    ],
)
def test_bad_inline_manifest_bytes(tmp_path: Path, value: str, message: str) -> None:
    refused(tmp_path, message, FLOE_INLINE_MANIFEST_BYTES=value)


def test_inline_manifest_bytes(tmp_path: Path) -> None:
    assert settings(tmp_path).inline_manifest_bytes == DEFAULT_INLINE_MANIFEST_BYTES == 16 * 1024
    assert settings(tmp_path, FLOE_INLINE_MANIFEST_BYTES="0").inline_manifest_bytes == 0  # always a file
    assert settings(tmp_path, FLOE_INLINE_MANIFEST_BYTES="1048576").inline_manifest_bytes == 1 << 20


# --- FLOE_WRITE_BUFFER_BYTES (the data-file writer's buffer budget) -------------------------------


def test_buffer_budget_default(tmp_path: Path) -> None:
    assert settings(tmp_path).write_buffer_bytes == DEFAULT_WRITE_BUFFER_BYTES == 256 * 1024 * 1024
    assert settings(tmp_path, FLOE_WRITE_BUFFER_BYTES="").write_buffer_bytes == DEFAULT_WRITE_BUFFER_BYTES


def test_buffer_budget_from_env(tmp_path: Path) -> None:
    assert settings(tmp_path, FLOE_WRITE_BUFFER_BYTES=str(1 << 20)).write_buffer_bytes == 1 << 20
    assert settings(tmp_path, FLOE_WRITE_BUFFER_BYTES="1073741824").write_buffer_bytes == 1 << 30


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "FLOE_WRITE_BUFFER_BYTES='abc' is not an integer"),
        ("64MB", "FLOE_WRITE_BUFFER_BYTES='64MB' is not an integer"),
        ("1048575", "FLOE_WRITE_BUFFER_BYTES=1048575 must be at least 1048576"),
        ("0", "FLOE_WRITE_BUFFER_BYTES=0 must be at least 1048576"),
        ("-1", "FLOE_WRITE_BUFFER_BYTES=-1 must be at least 1048576"),
    ],
)
def test_bad_buffer_budget(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        settings(tmp_path, FLOE_WRITE_BUFFER_BYTES=value)


def test_data_file_writer_uses_the_buffer_budget(sqlite_catalog: CatalogHandle) -> None:
    table = make_table(sqlite_catalog.catalog, sqlite_catalog.identifier("buf"))
    writer = DataFileWriter(
        table.io, table.schema(), table.spec(), table.properties, table.location_provider(), "test-",
        buffer_bytes=4 << 20,
    )
    assert writer._budget == 4 << 20
    assert writer._group_bytes <= 2 << 20  # row groups take at most half the budget
