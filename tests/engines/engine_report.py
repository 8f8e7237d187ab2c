"""What every outside-engine script shares: its command line, its one JSON answer, the pyiceberg guard.

    python tests/engines/<engine>_query.py METADATA_LOCATION 'SELECT ... FROM t' [SQL ...]

An engine script gives :func:`main` a function that answers the SQL statements (one list of rows,
column name -> value, per statement) and describes the engine. The answer is refused if pyiceberg
(the Python library Floe writes with) was imported in the process: the check must be another reader.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

Rows = list[dict[str, object]]
Query = Callable[[str, list[str]], tuple[dict[str, str], list[Rows]]]


def main(argv: list[str], query: Query, usage: str) -> int:
    if len(argv) < 2:
        print(usage, file=sys.stderr)
        return 2
    engine, results = query(argv[0], argv[1:])
    python_readers = sorted(m for m in sys.modules if m == "pyiceberg" or m.startswith("pyiceberg."))
    if python_readers:
        raise SystemExit(f"pyiceberg was imported in the engine process: {python_readers}")
    answer = {"engine": {**engine, "pyiceberg_modules_loaded": python_readers}, "results": results}
    print(json.dumps(answer, default=str))
    return 0
