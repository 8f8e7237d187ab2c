"""Peak RSS of one conversion, each in a fresh process: ``python -m bench.rss worker|pyiceberg CATALOG TABLE CSV``.

``worker`` runs what a Floe host runs for a task (``write_task_manifest`` on the file); ``pyiceberg``
reads the file with pyarrow and calls ``table.append()``. Prints one JSON line with the peak RSS
(``VmHWM`` of /proc/self/status, in MB) and the baseline RSS after imports. Not ``ru_maxrss``: Linux
carries it across exec, so a child reports its parent's size at fork when that was larger.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str]) -> int:
    mode, catalog_json, identifier, path = argv
    from pyiceberg.catalog import load_catalog

    if mode == "worker":
        from app.iceberg import begin_distributed_snapshot
        from workers.conversion import write_task_manifest
        from workers.datafiles import use_jemalloc_unless_configured

        use_jemalloc_unless_configured(None)  # what a worker process does when it starts
    else:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        from bench.data import csv_read_options
    props = json.loads(catalog_json)
    catalog = load_catalog(props.pop("name"), **props)
    table = catalog.load_table(identifier)
    baseline = _rss_now_mb()
    started = time.perf_counter()
    if mode == "worker":
        snapshot = begin_distributed_snapshot(table)
        descriptor = write_task_manifest(snapshot, table, [path], "rss")
        rows = descriptor.added_rows_count if descriptor else 0
    else:
        read, convert = csv_read_options()
        data: pa.Table = pacsv.read_csv(path, read_options=read, convert_options=convert)
        rows = data.num_rows
        table.append(data)
    seconds = time.perf_counter() - started
    peak = _peak_rss_mb()
    print(json.dumps({"peak_rss_mb": peak, "baseline_rss_mb": baseline, "rows": rows, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
