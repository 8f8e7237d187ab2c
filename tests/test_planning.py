"""A host plans its own files into tasks (workers/planning.py): balance, packing, splitting.

The plan is pure code over sized files; the splits come from workers/record_ranges.py, checked on real
files here, and a plan's tasks read back every row exactly once (tests/test_planned_jobs.py runs it
through the service and the real stack).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.formats import source_format
from app.jobs.model import Piece
from workers.planning import SizedFile, plan_tasks
from workers.record_ranges import Span

MB = 1 << 20


def _file(name: str, size: int) -> SizedFile:
    return SizedFile(name, Path("/nowhere") / name, size, source_format(Path(name)))


def _no_split(*_args: object) -> list[Span] | None:
    return None


def _bytes(task: tuple[Piece, ...], sizes: dict[str, int]) -> int:
    return sum(sizes[p.path] if p.whole else p.end - p.start for p in task)


def test_small_files_are_packed_into_one_task() -> None:
    files = [_file(f"d/{i:05d}.csv", 150) for i in range(10_000)]
    tasks = plan_tasks(files, processes=16, split=_no_split)
    assert len(tasks) == 1 and len(tasks[0]) == 10_000
    assert [p.path for p in tasks[0]] == sorted(f.relative for f in files)  # read in path order


def test_enough_bytes_keep_every_process_busy_and_balanced() -> None:
    sizes = {f"f{i}.csv": (i % 7 + 1) * 10 * MB for i in range(40)}
    files = [_file(n, s) for n, s in sizes.items()]
    tasks = plan_tasks(files, processes=4, split=_no_split)
    assert len(tasks) == 4
    loads = [_bytes(t, sizes) for t in tasks]
    assert sum(loads) == sum(sizes.values())
    assert max(loads) - min(loads) <= max(sizes.values())  # LPT: within one file of each other
    assert sorted(p.path for t in tasks for p in t) == sorted(sizes)  # every file once


def test_a_task_is_never_smaller_than_the_minimum_unless_it_is_all_there_is() -> None:
    files = [_file(f"f{i}.csv", 10 * MB) for i in range(5)]  # 50 MB over 8 processes
    tasks = plan_tasks(files, processes=8, min_task_bytes=32 * MB, split=_no_split)
    assert len(tasks) == 2  # ceil(50 / 32)


def test_a_big_file_is_split_and_the_pieces_balanced(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    line = b"1,some name,a,2024-01-01T00:00:00,1.5\n"
    path.write_bytes(b"id,name,category,ts,amount\n" + line * 200_000)
    size = path.stat().st_size
    files = [SizedFile("big.csv", path, size, source_format(path))]
    tasks = plan_tasks(files, processes=2, min_task_bytes=1 * MB)
    assert len(tasks) == 2
    pieces = sorted((p for t in tasks for p in t), key=lambda p: p.start)
    assert pieces[0].start == 0 and pieces[-1].end == size
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:], strict=False))  # contiguous, no overlap
    data = path.read_bytes()
    assert all(data[p.start - 1 : p.start] == b"\n" for p in pieces[1:])  # every cut on a record boundary
    assert abs((pieces[0].end - pieces[0].start) - (pieces[1].end - pieces[1].start)) < 2 * len(line)


def test_gzip_files_are_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.csv.gz"
    path.write_bytes(gzip.compress(b"id\n" + b"1\n" * 3_000_000))
    files = [SizedFile("big.csv.gz", path, path.stat().st_size, source_format(path))]
    (task,) = plan_tasks(files, processes=4, min_task_bytes=1)
    assert task == (Piece("big.csv.gz"),)


def test_parquet_is_split_by_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    table = pa.table({"id": pa.array(range(400_000), pa.int64())})
    pq.write_table(table, path, row_group_size=50_000)  # 8 row groups
    files = [SizedFile("big.parquet", path, path.stat().st_size, source_format(path))]
    tasks = plan_tasks(files, processes=2, min_task_bytes=1)
    assert len(tasks) == 2
    groups = sorted((p.start, p.end) for t in tasks for p in t)
    assert groups[0][0] == 0 and groups[-1][1] == 8
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:], strict=False))


def test_no_files_no_tasks() -> None:
    assert plan_tasks([], processes=4) == []


@pytest.mark.parametrize("processes", [1, 3])
def test_the_plan_is_deterministic(processes: int) -> None:
    files = [_file(f"f{i}.jsonl", (i * 37 % 11 + 1) * MB) for i in range(30)]
    first = plan_tasks(files, processes, min_task_bytes=MB, split=_no_split)
    assert plan_tasks(list(reversed(files)), processes, min_task_bytes=MB, split=_no_split) == first
