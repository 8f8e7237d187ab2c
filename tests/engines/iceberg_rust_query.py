"""Query an Iceberg table with iceberg-rust + Apache DataFusion, knowing only its metadata location.

    python tests/engines/iceberg_rust_query.py METADATA_LOCATION 'SELECT count(*) AS n FROM t' [SQL ...]

The table is registered as ``t`` through ``pyiceberg_core.datafusion.IcebergDataFusionTable``:
iceberg-rust (compiled into pyiceberg-core) reads the metadata JSON, the manifest list, the
manifests and the Parquet files itself; DataFusion runs the SQL. No catalog is involved and
pyiceberg (the Python library Floe writes with) is never imported in this process: the script
refuses to answer if it was.

Prints one JSON object: ``{"engine": {...}, "results": [[row, ...], ...]}``, one list of rows
(column name -> value) per SQL statement, in order.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version


def query(metadata_location: str, statements: list[str]) -> dict[str, object]:
    from datafusion import SessionContext
    from pyiceberg_core.datafusion import IcebergDataFusionTable

    provider = IcebergDataFusionTable(
        identifier=["outside", "t"], metadata_location=metadata_location, file_io_properties={}
    )
    ctx = SessionContext()
    ctx.register_table("t", provider)
    results = [ctx.sql(sql).to_pylist() for sql in statements]
    python_readers = sorted(m for m in sys.modules if m == "pyiceberg" or m.startswith("pyiceberg."))
    if python_readers:
        raise SystemExit(f"pyiceberg was imported in the engine process: {python_readers}")
    return {
        "engine": {
            "reader": "iceberg-rust (pyiceberg_core.datafusion.IcebergDataFusionTable)",
            "pyiceberg-core": version("pyiceberg-core"),
            "datafusion": version("datafusion"),
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
