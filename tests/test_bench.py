"""The benchmark harness on tiny data: every contender runs and is checked, and every key is a number.

No time is asserted here: only that the harness measures something real for every contender.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD_KEYS = {
    "floor_s",
    "pyiceberg_s",
    "daft_s",
    "floe_s",
    "floe_vs_floor",
    "floe_vs_pyiceberg",
    "floe_vs_daft",
    "files",
}
TOP_KEYS = {
    "machine",
    "rounds",
    "source_mb",
    "unpartitioned",
    "partitioned",
    "partitions",
    "commit_ms",
    "plan_ms_1000_merged",
    "plan_ms_single_append",
    "per_task_overhead_ms",
    "worker_peak_rss_mb",
    "worker_rss_source_mb",
    "pyiceberg_peak_rss_mb",
    "scale",
}
SCALE_KEYS = {
    "startjob_ms_10000_tasks",
    "startjob_published_s_10000_tasks",
    "planned_10000_files_s",
    "planned_files_written",
    "planned_files_bound",
    "planned_manifests",
    "plan_ms_after_10000_files",
    "plan_ms_single_append_same_rows",
    "big_file_mb",
    "big_file_floe_s",
    "big_file_floor_s",
    "big_file_floe_vs_floor",
    "big_file_tasks",
}
CONTENDERS = ("floor", "pyiceberg", "daft", "floe")


def _daft_or_skip() -> bool:
    """True when Daft runs; without it the test goes on without Daft, except under CI."""
    if importlib.util.find_spec("daft") is not None:
        return True
    if os.environ.get("CI"):
        pytest.fail("daft is not installed under CI: install the bench extra (pip install -e '.[bench]')")
    return False


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.integration
@pytest.mark.timeout(170)
def test_harness_runs_every_contender_on_tiny_data(tmp_path: Path) -> None:
    with_daft = _daft_or_skip()
    out = tmp_path / "results" / "latest.json"
    argv = [
        sys.executable, "-m", "bench.run", "--quick", "--rounds", "1",
        "--csv-mb", "3", "--files-per-host", "2",
        "--commit-tasks", "10,100", "--plan-tasks", "100", "--overhead-tasks", "10", "--rss-mb", "4",
        "--small-files", "40", "--big-mb", "2", "--startjob-tasks", "200",
        "--out", str(out), "--workdir", str(tmp_path / "work"), "--no-plot",
    ]  # fmt: skip
    if not with_daft:
        argv.append("--no-daft")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEBERG_", "PYICEBERG_", "FLOE_", "WORKER_"))}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=160)
    assert done.returncode == 0, f"bench.run failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"

    result = json.loads(out.read_text())
    assert set(result) == TOP_KEYS
    assert isinstance(result["machine"], str) and result["machine"]
    assert result["rounds"] == 1
    assert result["source_mb"] > 2
    assert result["partitions"] == 24  # 8 categories x 3 days
    for workload in ("unpartitioned", "partitioned"):
        w = result[workload]
        assert set(w) == WORKLOAD_KEYS
        for key, value in w.items():
            if key == "files" or (not with_daft and "daft" in key):
                continue
            assert _number(value) and value > 0, (workload, key, value)
        assert set(w["files"]) == set(CONTENDERS)
        for contender in CONTENDERS:
            if contender == "daft" and not with_daft:
                continue
            assert isinstance(w["files"][contender], int) and w["files"][contender] >= 1, (workload, contender)
    # one file per partition per host at most, for the floor and for Floe
    assert result["partitioned"]["files"]["floe"] <= 2 * result["partitions"]
    assert set(result["commit_ms"]) == {"10", "100"}
    assert all(_number(v) and v > 0 for v in result["commit_ms"].values())
    scale = result["scale"]
    assert set(scale) == SCALE_KEYS
    assert all(_number(v) and v > 0 for v in scale.values()), scale
    assert scale["planned_files_written"] <= scale["planned_files_bound"]
    assert scale["big_file_tasks"] >= 1
    for key in TOP_KEYS - {"machine", "unpartitioned", "partitioned", "commit_ms", "scale"}:
        assert _number(result[key]), (key, result[key])
    assert result["worker_rss_source_mb"] >= 4

    details = json.loads(out.with_name("latest-details.json").read_text())
    for workload in ("unpartitioned", "partitioned"):
        for contender in CONTENDERS:
            if contender == "daft" and not with_daft:
                continue
            assert len(details["rounds"]["times"][workload][contender]) == 1
    assert details["overhead"]["tasks"] == 10
    # the per-task job's context: the vCPU's speed and the price of creating a file beside the table
    assert all(_number(v) and v > 0 for v in details["overhead"]["speed_probe_ms"]), details["overhead"]
    assert len(details["overhead"]["file_create_us"]) == 2
    assert all(_number(v) and v > 0 for v in details["overhead"]["file_create_us"]), details["overhead"]
    assert not list((tmp_path / "work").rglob("create-probe-*"))  # the probe's folders are removed
    assert "floe" in done.stdout and "targets (issue 8)" in done.stdout


def test_check_table_refuses_a_wrong_row_count(tmp_path: Path) -> None:
    from bench.checks import CheckFailed, check_table
    from bench.data import ARROW_SCHEMA, create_table, make_batch

    (tmp_path / "wh").mkdir()
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    table = create_table(catalog, "ns.t", partitioned=True)
    with pytest.raises(CheckFailed, match="no snapshot"):
        check_table(catalog, "ns.t", 0)
    batch = make_batch(0, 100, 1)
    assert batch.schema == ARROW_SCHEMA
    table.append(pa.Table.from_batches(batch.to_batches()))
    assert check_table(catalog, "ns.t", 100) >= 1
    with pytest.raises(CheckFailed, match="expected 101 rows"):
        check_table(catalog, "ns.t", 101)
