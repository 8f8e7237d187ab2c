"""Query an Iceberg table with iceberg-rust + Apache DataFusion, knowing only its metadata location.

    python tests/engines/iceberg_rust_query.py METADATA_LOCATION 'SELECT count(*) AS n FROM t' [SQL ...]

The table is registered as ``t`` through ``pyiceberg_core.datafusion.IcebergDataFusionTable``:
iceberg-rust (compiled into pyiceberg-core) reads the metadata JSON, the manifest list, the
manifests and the Parquet files itself; DataFusion runs the SQL. No catalog is involved and
pyiceberg (the Python library Floe writes with) is never imported in this process: the script
refuses to answer if it was.

Prints one JSON object (tests/engines/engine_report.py): ``{"engine": {...}, "results": [[row, ...], ...]}``,
one list of rows (column name -> value) per SQL statement, in order.
"""

from __future__ import annotations

import sys
from importlib.metadata import version

from engine_report import Rows, main


def query(metadata_location: str, statements: list[str]) -> tuple[dict[str, str], list[Rows]]:
    from datafusion import SessionContext
    from pyiceberg_core.datafusion import IcebergDataFusionTable

    provider = IcebergDataFusionTable(
        identifier=["outside", "t"], metadata_location=metadata_location, file_io_properties={}
    )
    ctx = SessionContext()
    ctx.register_table("t", provider)
    results = [ctx.sql(sql).to_pylist() for sql in statements]
    engine = {
        "reader": "iceberg-rust (pyiceberg_core.datafusion.IcebergDataFusionTable)",
        "pyiceberg-core": version("pyiceberg-core"),
        "datafusion": version("datafusion"),
    }
    return engine, results


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], query, __doc__ or ""))
