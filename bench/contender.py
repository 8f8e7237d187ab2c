"""A warm contender process: imports first, then runs one JSON command per line read on stdin.

``python -m bench.contender floor|pyiceberg|daft`` prints ``{"ready": ...}`` once its libraries are
imported, then answers every command line with one JSON line. The driver times each command from
writing the line to reading the answer, so interpreter start-up and imports are never on the clock.

Commands (JSON objects):
- ``{"op": "floor", "jobs": [{"files": [...], "out_dir": "...", "prefix": "h1"}, ...], "partitioned": b}``:
  pyarrow alone, one thread per job: read the CSV, write zstd Parquet with the table's settings
  and Floe's per-file dictionary choice (one file per job, or one file per partition per job).
  No Iceberg metadata.
- ``{"op": "pyiceberg", "catalog": {...}, "table": "ns.t", "files": [...]}``: read every file with
  pyarrow, then ``table.append()`` once.
- ``{"op": "daft", "catalog": {...}, "table": "ns.t", "files": [...]}``:
  ``daft.read_csv(files).write_iceberg(table)``.
- ``{"op": "exit"}``.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench.data import ARROW_SCHEMA, PARQUET_KWARGS, ROW_GROUP_ROWS, csv_read_options
from workers.parquet_encoding import dictionary_columns
from workers.partition_split import split_rows

# What Floe's writer uses as its buffer budget; the floor flushes on the same rule.
FLOOR_BUFFER_BYTES = 256 * 1024 * 1024
FLOOR_GROUP_BYTES = 128 * 1024 * 1024
# CSV block size: 1 MiB reads faster than 16 MiB blocks (0.6 against 0.85-1.1 s per host of the quick
# data, measured). Splitting by partition costs less per row in larger pieces, so when partitioned
# the blocks are gathered to SPLIT_ROWS rows before each split, as Floe's writer does.
FLOOR_BLOCK_BYTES = 1 << 20
SPLIT_ROWS = 65_536


# --- floor ---------------------------------------------------------------------------------------


class _FloorPartition:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0
        self.nbytes = 0
        self.writer: pq.ParquetWriter | None = None

    def flush(self) -> int:
        if not self.batches:
            return 0
        table = pa.Table.from_batches(self.batches, schema=ARROW_SCHEMA)
        freed = self.nbytes
        self.batches, self.rows, self.nbytes = [], 0, 0
        if self.writer is None:
            # the same per-file dictionary choice as Floe's writer: the floor writes the same Parquet
            self.writer = pq.ParquetWriter(
                str(self.path),
                ARROW_SCHEMA,
                use_dictionary=dictionary_columns(table, ARROW_SCHEMA.names),
                **PARQUET_KWARGS,  # type: ignore[arg-type]
            )
        self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        return freed

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


def _partition_pieces(batch: pa.RecordBatch) -> list[tuple[tuple[object, ...], pa.RecordBatch]]:
    """Split a batch by (category, day(ts)) with Floe's own split (one integer-key sort, one take):
    the floor must not be slower for want of a trick pyarrow offers."""
    day = pc.divide(pc.cast(batch.column("ts"), pa.int64()), 86_400_000_000)
    return split_rows(batch, [batch.column("category"), day])


def _blocks(files: list[str]) -> Iterator[pa.RecordBatch]:
    _, convert = csv_read_options()
    for path in files:
        read = pacsv.ReadOptions(use_threads=True, block_size=FLOOR_BLOCK_BYTES)
        yield from pacsv.open_csv(path, read_options=read, convert_options=convert)


def _gathered(blocks: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Blocks concatenated to at least SPLIT_ROWS rows (the last one may be shorter), across files."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for block in blocks:
        pending.append(block)
        rows += block.num_rows
        if rows >= SPLIT_ROWS:
            yield pa.concat_batches(pending)
            pending, rows = [], 0
    if pending:
        yield pa.concat_batches(pending)


def floor_job(files: list[str], out_dir: str, prefix: str, partitioned: bool) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts: dict[tuple[Any, Any], _FloorPartition] = {}
    buffered = 0
    rows = 0
    batches = _gathered(_blocks(files)) if partitioned else _blocks(files)
    for batch in batches:
        rows += batch.num_rows
        pieces = _partition_pieces(batch) if partitioned else [((None, None), batch)]
        for key, piece in pieces:
            part = parts.get(key)
            if part is None:
                name = f"{prefix}-{len(parts):05d}.parquet"
                sub = out if key == (None, None) else out / f"category={key[0]}" / f"ts_day={key[1]}"
                sub.mkdir(parents=True, exist_ok=True)
                part = parts[key] = _FloorPartition(sub / name)
            part.batches.append(piece)
            part.rows += piece.num_rows
            part.nbytes += piece.nbytes
            buffered += piece.nbytes
            if part.rows >= ROW_GROUP_ROWS or part.nbytes >= FLOOR_GROUP_BYTES:
                buffered -= part.flush()
        while buffered > FLOOR_BUFFER_BYTES:
            buffered -= max(parts.values(), key=lambda p: p.nbytes).flush()
    for part in parts.values():
        part.close()
    return {"rows": rows, "paths": [str(p.path) for p in parts.values() if p.writer is not None]}


def run_floor(cmd: dict[str, Any]) -> dict[str, Any]:
    results: list[dict[str, Any] | BaseException] = [RuntimeError("not run")] * len(cmd["jobs"])

    def work(i: int, job: dict[str, Any]) -> None:
        try:
            results[i] = floor_job(job["files"], job["out_dir"], job["prefix"], bool(cmd["partitioned"]))
        except BaseException as exc:  # noqa: BLE001 - reported to the driver
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i, job)) for i, job in enumerate(cmd["jobs"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    done = [r for r in results if isinstance(r, dict)]
    return {"rows": sum(r["rows"] for r in done), "paths": [p for r in done for p in r["paths"]]}


# --- pyiceberg and daft --------------------------------------------------------------------------

_catalogs: dict[str, Any] = {}


def _table(cmd: dict[str, Any]) -> Any:
    from pyiceberg.catalog import load_catalog

    props = dict(cmd["catalog"])
    key = json.dumps(props, sort_keys=True)
    if key not in _catalogs:
        _catalogs[key] = load_catalog(props.pop("name"), **props)
    return _catalogs[key].load_table(cmd["table"])


def run_pyiceberg(cmd: dict[str, Any]) -> dict[str, Any]:
    table = _table(cmd)
    read, convert = csv_read_options()
    data = pa.concat_tables([pacsv.read_csv(f, read_options=read, convert_options=convert) for f in cmd["files"]])
    table.append(data)
    return {"rows": data.num_rows}


def run_daft(cmd: dict[str, Any]) -> dict[str, Any]:
    import daft

    table = _table(cmd)
    schema = {f.name: daft.DataType.from_arrow_type(f.type) for f in ARROW_SCHEMA}
    df = daft.read_csv(cmd["files"], schema=schema, infer_schema=False)
    df.write_iceberg(table)
    return {}


def _cpu_seconds() -> float:
    """User + system CPU of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


OPS = {"floor": run_floor, "pyiceberg": run_pyiceberg, "daft": run_daft}


def main(argv: list[str]) -> int:
    kind = argv[0] if argv else "floor"
    if kind in ("pyiceberg", "daft"):
        import pyiceberg.catalog.sql  # noqa: F401
        import pyiceberg.io.pyarrow  # noqa: F401
        import pyiceberg.table  # noqa: F401
    if kind == "daft":
        import daft  # noqa: F401
    out = sys.stdout
    out.write(json.dumps({"ready": kind}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd.get("op") == "exit":
            break
        started = time.perf_counter()
        cpu = _cpu_seconds()
        try:
            reply: dict[str, Any] = {"ok": True, **OPS[cmd["op"]](cmd)}
        except Exception as exc:  # noqa: BLE001 - the driver reports it
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        reply["inner_s"] = time.perf_counter() - started
        reply["cpu_s"] = _cpu_seconds() - cpu
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
