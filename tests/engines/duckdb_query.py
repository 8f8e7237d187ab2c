"""Query an Iceberg table with DuckDB's iceberg extension, knowing only its metadata location.

    python tests/engines/duckdb_query.py METADATA_LOCATION 'SELECT count(*) AS n FROM t' [SQL ...]

DuckDB's iceberg extension (C++, with DuckDB's own Avro and Parquet readers) reads the metadata
JSON, the manifest list, the manifests and the data files itself; ``t`` is a view over
``iceberg_scan(METADATA_LOCATION)``. The extensions come from the ``duckdb-extension-iceberg`` and
``duckdb-extension-avro`` wheels and are installed into a temporary directory: nothing is fetched
from the network. pyiceberg is never imported in this process: the script refuses to answer if it was.

Prints one JSON object: ``{"engine": {...}, "results": [[row, ...], ...]}``, one list of rows
(column name -> value) per SQL statement, in order.
"""

from __future__ import annotations

import json
import sys
import tempfile
from importlib.metadata import version


def query(metadata_location: str, statements: list[str]) -> dict[str, object]:
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
    python_readers = sorted(m for m in sys.modules if m == "pyiceberg" or m.startswith("pyiceberg."))
    if python_readers:
        raise SystemExit(f"pyiceberg was imported in the engine process: {python_readers}")
    return {
        "engine": {
            "reader": "DuckDB iceberg extension (iceberg_scan)",
            "duckdb": version("duckdb"),
            "duckdb-extension-iceberg": version("duckdb-extension-iceberg"),
            "pyiceberg_modules_loaded": python_readers,
        },
        "results": results,
    }


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(query(argv[0], argv[1:]), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
