"""`floe` as a user runs it: a real subprocess, FLOE_HOME in tmp_path, a real coordinator and worker."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.system import ROOT, Cluster, free_port
from tests.support.tables import read_ids, rows, write_csv

FLOE = str(ROOT / ".venv" / "bin" / "floe")


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ICEBERG_", "PYICEBERG_", "WORKER_", "FLOE_", "COORDINATOR_", "REDIS_"))
    }
    conf = home.parent / "pyiceberg-home"
    conf.mkdir(parents=True, exist_ok=True)
    env.update({"FLOE_HOME": str(home), "PYICEBERG_HOME": str(conf), "PYTHONUNBUFFERED": "1", **extra})
    return env


def floe(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLOE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "floe-home"


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "x.csv", rows(0, 20))


# --- floe table create ----------------------------------------------------------------------------


def test_table_create_from_sample_prints_the_schema_and_spec(
    tmp_path: Path, home: Path, sample: Path
) -> None:
    result = floe(
        "table", "create", "demo.t", "--from-sample", "x.csv", "--partition-by", "category,day(ts)",
        env=clean_env(home), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    warehouse = (home / "warehouse").as_uri()
    assert out.startswith(f"created demo.t at {warehouse}/demo/t"), out
    for line in (
        "1: id: optional long",
        "2: name: optional string",
        "3: category: optional string",
        "4: ts: optional timestamp",
        "5: amount: optional double",
        "1000: category: identity(3)",
        "1001: ts_day: day(4)",
    ):
        assert line in out, out
    assert "Traceback" not in result.stderr
    # the table really is in the embedded catalog under FLOE_HOME
    assert (home / "catalog.db").is_file()
    assert (home / "warehouse" / "demo" / "t" / "metadata").is_dir()


def test_table_create_from_schema_file(tmp_path: Path, home: Path) -> None:
    from tests.support.tables import SCHEMA

    (tmp_path / "schema.json").write_text(SCHEMA.model_dump_json())
    result = floe(
        "table", "create", "ns.events", "--schema", "schema.json", "--partition-by", "bucket[16](id)",
        "--property", "write.target-file-size-bytes=1048576",
        env=clean_env(home), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1: id: required long" in result.stdout
    assert "1000: id_bucket: bucket[16](1)" in result.stdout


def test_table_create_twice_exits_2_with_already_exists(tmp_path: Path, home: Path, sample: Path) -> None:
    env = clean_env(home)
    assert floe("table", "create", "demo.t", "--from-sample", "x.csv", env=env, cwd=tmp_path).returncode == 0
    again = floe("table", "create", "demo.t", "--from-sample", "x.csv", env=env, cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().endswith("floe: table demo.t already exists"), again.stderr
    assert "Traceback" not in again.stderr and again.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--from-sample", "x.csv", "--partition-by", "day(name)"],
            "floe: partition term 'day(name)': day cannot apply to name (string)",
        ),
        (
            ["--from-sample", "x.csv", "--partition-by", "foo(ts)"],
            "floe: partition term 'foo(ts)': unknown transform 'foo'",
        ),
        (
            ["--from-sample", "x.csv", "--partition-by", "nope"],
            "floe: partition term 'nope': the schema has no column 'nope'",
        ),
        (["--from-sample", "missing.csv"], "missing.csv: cannot infer a schema"),
        (["--schema", "missing.json"], "missing.json: cannot be read"),
    ],
)
def test_table_create_refusals_exit_2_with_a_message(
    tmp_path: Path, home: Path, sample: Path, args: list[str], message: str
) -> None:
    result = floe("table", "create", "demo.t", *args, env=clean_env(home), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_table_create_needs_a_schema_or_sample(tmp_path: Path, home: Path) -> None:
    result = floe("table", "create", "demo.t", env=clean_env(home), cwd=tmp_path)
    assert result.returncode == 2  # argparse
    assert "one of the arguments --schema --from-sample is required" in result.stderr


def test_bad_catalog_setting_exits_2(tmp_path: Path, home: Path, sample: Path) -> None:
    result = floe(
        "table", "create", "demo.t", "--from-sample", "x.csv",
        env=clean_env(home, ICEBERG_CATALOG_TYPE="nessie"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "floe: ICEBERG_CATALOG_TYPE='nessie' is not a catalog type pyiceberg knows" in result.stderr


def test_table_create_property_without_equals_is_refused_cleanly(
    tmp_path: Path, home: Path, sample: Path
) -> None:
    result = floe(
        "table", "create", "demo.t", "--from-sample", "x.csv", "--property", "format-version",
        env=clean_env(home), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "format-version" in result.stderr


# --- floe job: refusals before or without a coordinator -------------------------------------------


def test_job_command_without_a_coordinator_is_unavailable(tmp_path: Path, home: Path) -> None:
    env = clean_env(home, FLOE_COORDINATOR=f"127.0.0.1:{free_port()}")
    result = floe("job", "status", "0123456789abcdef0123456789abcdef", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "floe: UNAVAILABLE:" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_job_start_with_an_empty_task_id_is_refused(tmp_path: Path, home: Path) -> None:
    env = clean_env(home, FLOE_COORDINATOR=f"127.0.0.1:{free_port()}")
    result = floe("job", "start", "demo.t", "--task", ":1:*.csv", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "floe: --task ':1:*.csv': the task id is empty" in result.stderr


def test_job_start_with_a_table_without_namespace_is_refused(tmp_path: Path, home: Path) -> None:
    env = clean_env(home, FLOE_COORDINATOR=f"127.0.0.1:{free_port()}")
    result = floe("job", "start", "events", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "floe: table 'events' must be NAMESPACE.TABLE" in result.stderr


def test_job_list_with_an_unknown_state_is_refused_cleanly(tmp_path: Path, home: Path) -> None:
    env = clean_env(home, FLOE_COORDINATOR=f"127.0.0.1:{free_port()}")
    result = floe("job", "list", "--state", "bogus", env=env, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "bogus" in result.stderr.lower()


def test_job_start_prop_without_equals_is_refused_cleanly(tmp_path: Path, home: Path) -> None:
    env = clean_env(home, FLOE_COORDINATOR=f"127.0.0.1:{free_port()}")
    result = floe("job", "start", "demo.t", "--prop", "team", env=env, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "team" in result.stderr


def test_worker_with_a_bad_concurrency_is_a_config_error(tmp_path: Path, home: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = clean_env(
        home,
        WORKER_ID="w1",
        WORKER_DATA_BASE=str(data),
        WORKER_ADDRESS=f"127.0.0.1:{free_port()}",
        FLOE_WORKER_CONCURRENCY="abc",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    result = floe("worker", env=env, cwd=tmp_path, timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "FLOE_WORKER_CONCURRENCY='abc'" in result.stderr


def test_worker_without_worker_id_is_a_config_error(tmp_path: Path, home: Path) -> None:
    result = floe("worker", env=clean_env(home), cwd=tmp_path)
    assert result.returncode == 2
    assert "floe: WORKER_ID is required for `floe worker`" in result.stderr


# --- floe job against a real coordinator (and worker) ---------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path, redis_server: object) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "floe", redis_server.url)  # type: ignore[attr-defined]
    try:
        yield c
    finally:
        c.stop_all()


def cluster_env(cluster: Cluster) -> dict[str, str]:
    env = clean_env(cluster.home, REDIS_URL=cluster.redis_url, FLOE_COORDINATOR=cluster.target)
    env["FLOE_LOG_FORMAT"] = "json"
    return env


@pytest.mark.integration
def test_job_status_of_an_unknown_job_is_not_found(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_coordinator()
    env = cluster_env(cluster)
    result = floe("job", "status", "0123456789abcdef0123456789abcdef", env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "NOT_FOUND" in result.stderr, result.stderr
    assert "job '0123456789abcdef0123456789abcdef' does not exist" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr  # a message, not a raw grpc traceback
    assert result.stdout == ""
    # the streaming call reports it the same way
    watched = floe("job", "watch", "0123456789abcdef0123456789abcdef", env=env, cwd=tmp_path)
    assert watched.returncode != 0 and "NOT_FOUND" in watched.stderr, watched.stderr
    assert "Traceback" not in watched.stderr, watched.stderr
    # a malformed id is an INVALID_ARGUMENT, also without a traceback
    bad = floe("job", "status", "nope", env=env, cwd=tmp_path)
    assert bad.returncode != 0 and "INVALID_ARGUMENT" in bad.stderr and "Traceback" not in bad.stderr
    assert "job_id='nope' is not a job id" in bad.stderr
    # and the table a job names must exist
    missing = floe("job", "start", "demo.nope", "--task", "t1", env=env, cwd=tmp_path)
    assert missing.returncode != 0 and "NOT_FOUND" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.integration
def test_job_start_watch_runs_a_job_to_completion(cluster: Cluster, tmp_path: Path) -> None:
    env = cluster_env(cluster)
    created = floe(
        "table", "create", "demo.t", "--from-sample", str(write_csv(tmp_path / "sample.csv", rows(0, 3))),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    write_csv(cluster.data_dir("1") / "part-1.csv", rows(0, 60))
    write_csv(cluster.data_dir("1") / "part-2.csv", rows(60, 40))
    write_csv(cluster.data_dir("1") / "ignored.txt", rows(1000, 5))  # not matched by the glob
    cluster.start_coordinator()
    cluster.start_worker("1")
    result = floe(
        "job", "start", "demo.t", "--task", "t1:1:*.csv", "--requester", "cli-test", "--watch",
        env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout, result.stderr, cluster.logs())
    reply = json.loads(result.stdout)
    assert reply["created"] is True and len(reply["job_id"]) == 32
    # the progress bar: carriage-return redrawn lines ending in the final state
    bars = [line for line in result.stderr.replace("\r", "\n").splitlines() if "manifests" in line]
    assert bars, result.stderr
    assert bars[-1].startswith("[" + "#" * 30 + "] 1/1 manifests"), bars
    assert "100 rows" in bars[-1] and bars[-1].rstrip().endswith("COMPLETED"), bars
    assert "Traceback" not in result.stderr
    # the table has exactly the rows of the matched files, in one snapshot
    table = cluster.catalog.load_table("demo.t")
    assert read_ids(table) == list(range(100))
    assert len(table.metadata.snapshots) == 1
    snap = table.metadata.current_snapshot()
    assert snap is not None and snap.summary is not None
    assert snap.summary["floe.job-id"] == reply["job_id"]
    # and `floe job status` shows the same job, completed
    status = floe("job", "status", reply["job_id"], env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["state"] == "COMPLETED" and shown["rows_written"] == "100"
