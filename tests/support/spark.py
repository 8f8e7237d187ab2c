"""Apache Spark (Iceberg's Java library) as an outside engine: one JVM, many requests.

:class:`SparkEngine` runs tests/engines/spark_session.py as a subprocess and sends it requests, one JSON
line each (see that script): a catalog (pyiceberg's SqlCatalog name on the same PostgreSQL database,
as a JDBC catalog) and operations (SQL, or "read every row of a table"). Starting the JVM costs
~10 s, so a test module keeps one engine for all its tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from importlib.metadata import PackageNotFoundError, files
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from tests.support.catalogs import PG_URI, CatalogHandle

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "tests" / "engines" / "spark_session.py"
ICEBERG_WHEEL = "snowpark-connect-deps-iceberg"
ICEBERG_JAR = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
JDBC_DIR = Path("/usr/share/java")
INSTALL_HINT = "run `make spark-deps` (pyspark 3.5, the Iceberg runtime jar wheel, Debian's PostgreSQL JDBC driver)"

Rows = list[dict[str, Any]]


def spark_missing() -> str | None:
    """Why Spark cannot run here, or None."""
    if shutil.which("java") is None:
        return "java is not on PATH (Spark 3.5 needs Java 8/11/17)"
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed"
    try:
        if not any(f.name == ICEBERG_JAR for f in files(ICEBERG_WHEEL) or []):
            return f"{ICEBERG_WHEEL} carries no {ICEBERG_JAR}"
    except PackageNotFoundError:
        return f"{ICEBERG_WHEEL} is not installed"
    if not list(JDBC_DIR.glob("postgresql*.jar")):
        return f"no PostgreSQL JDBC driver under {JDBC_DIR} (Debian: libpostgresql-jdbc-java)"
    return None


def jdbc_catalog(handle: CatalogHandle) -> dict[str, str]:
    """The Spark JDBC catalog that sees what ``handle``'s pyiceberg SqlCatalog (on PostgreSQL) sees."""
    url = make_url(handle.properties.get("uri", PG_URI))
    if not url.drivername.startswith("postgresql"):
        raise ValueError(f"Spark reads the SQL catalog through JDBC on PostgreSQL only, not {url.drivername}")
    return {
        "name": handle.properties["name"],
        "uri": f"jdbc:postgresql://{url.host or '127.0.0.1'}:{url.port or 5432}/{url.database}",
        "user": url.username or "postgres",
        "password": url.password or "",
        "warehouse": handle.properties["warehouse"],
    }


class SparkError(AssertionError):
    """An operation failed in Spark (the message carries Spark's error and the engine's log tail)."""


class SparkEngine:
    def __init__(self, log_path: Path, start_timeout: float = 120) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT)],
            cwd=log_path.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"},
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        ready = self._next(start_timeout, "Spark to start")
        self.engine: dict[str, Any] = ready["engine"]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def log_tail(self, chars: int = 6000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def _next(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.log_tail()}") from None
        if line is None:
            code = self.proc.wait(timeout=30)
            raise AssertionError(f"the Spark process exited ({code}) waiting for {what}\n{self.log_tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, catalog: dict[str, str], operations: list[dict[str, Any]], timeout: float = 150) -> list[Rows]:
        """Run ``operations`` in order; one list of rows per operation. A failure raises SparkError."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"catalog": catalog, "operations": operations}) + "\n")
        self.proc.stdin.flush()
        answer = self._next(timeout, f"Spark to run {len(operations)} operations")
        if not answer["ok"]:
            failed = answer["failed"]
            op = operations[failed] if 0 <= failed < len(operations) else None
            raise SparkError(f"Spark failed on operation {failed} {op!r}:\n{answer['error']}\n{self.log_tail()}")
        assert answer["engine"]["pyiceberg_modules_loaded"] == [], answer["engine"]
        results: list[Rows] = answer["results"]
        return results

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
