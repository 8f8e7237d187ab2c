"""Query an Iceberg table with DuckDB's iceberg extension, knowing only its metadata location.

    python tests/engines/duckdb_query.py METADATA_LOCATION 'SELECT count(*) AS n FROM t' [SQL ...]

DuckDB's iceberg extension (C++, with DuckDB's own Avro and Parquet readers) reads the metadata
JSON, the manifest list, the manifests and the data files itself; ``t`` is a view over
``iceberg_scan(METADATA_LOCATION)``. The extensions come from the ``duckdb-extension-iceberg`` and
``duckdb-extension-avro`` wheels and are installed into a temporary directory: nothing is fetched
from the network. pyiceberg is never imported in this process: the script refuses to answer if it was.

Prints one JSON object (tests/engines/engine_report.py): ``{"engine": {...}, "results": [[row, ...], ...]}``,
one list of rows (column name -> value) per SQL statement, in order.
"""

from __future__ import annotations

import sys
import tempfile
from importlib.metadata import version

from engine_report import Rows, main


def query(metadata_location: str, statements: list[str]) -> tuple[dict[str, str], list[Rows]]:
    import duckdb
    from duckdb_extensions import import_extension

    with tempfile.TemporaryDirectory(prefix="duckdb-ext-") as ext_dir:
        con = duckdb.connect(
            config={
                "extension_directory": ext_dir,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            }
        )
        for name in ("avro", "iceberg"):
            import_extension(name, con=con)
            con.sql(f"LOAD {name}")
        location = metadata_location.removeprefix("file://")
        con.execute(f"CREATE VIEW t AS SELECT * FROM iceberg_scan('{location}')")
        results = []
        for sql in statements:
            cursor = con.execute(sql)
            names = [d[0] for d in cursor.description or []]
            results.append([dict(zip(names, row, strict=True)) for row in cursor.fetchall()])
        con.close()
    engine = {
        "reader": "DuckDB iceberg extension (iceberg_scan)",
        "duckdb": version("duckdb"),
        "duckdb-extension-iceberg": version("duckdb-extension-iceberg"),
    }
    return engine, results


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], query, __doc__ or ""))
