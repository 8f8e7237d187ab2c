"""Hypothesis strategies for the fuzz tests: a valid request with a few fields fuzzed (and sometimes
every field), job ids among the scratch jobs, manifest descriptions naming sandbox files."""

from __future__ import annotations

import base64
import string
from typing import Any

from google.protobuf.message import Message
from hypothesis import strategies as st

from app.proto_gen.api import common_pb2
from tests.support.fuzz_server import POOL, Api, start_fuzz_job
from tests.support.tables import rows, write_csv
from workers.conversion import write_task_manifest

# --------------------------------------------------------------------------------------------
# strategies: a valid request with a few fields fuzzed (and sometimes every field)
# --------------------------------------------------------------------------------------------

MB_STRING = "x" * (1 << 20)
SPECIAL_TEXT = [
    "", " ", "\t", "\n", "\r\n", "\x00", "\x7f", "\x1b[2J", "a\n", "a\x00b", "0" * 32, "0" * 32 + "\n",
    "F" * 32, "../etc/passwd", "/etc/passwd", "~root", "*", "**/*", ".", "..", "a.b", "a..b", " demo",
    "demo", "events", "scratch", "default", "t1", "s0", "worker-1", "1", "a" * 128, "a" * 129, "a" * 257,
    "a" * 1025, "é", "日本語", "🙂", "\u202e", "\u2028", "\ufeff", "\U0010ffff", "%s%d%n", "{}", "[]",
    "null", "${jndi:ldap://x}", "'; DROP TABLE jobs; --", "floe:job:x", "\\", "a/b", "a:b", "-a",
]  # fmt: skip
text = st.one_of(
    st.sampled_from(SPECIAL_TEXT),
    st.integers(1 << 20, 1 << 20).map(lambda n: "x" * n),  # 1 MB (a map: reprs stay short)
    st.text(max_size=40),
    st.text(st.characters(max_codepoint=0x7F), max_size=40),
    st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp", "Mn"]), max_size=12),
    st.text(string.ascii_letters + string.digits + "._:-", min_size=1, max_size=130),
)
short_text = st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(max_size=40))
valid_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,15}\Z")
ids = st.one_of(valid_ids, text)
hex32 = st.text("0123456789abcdef", min_size=32, max_size=32)
INT32_EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 604800, 604801, 100_000, 100_001]
INT64_EDGES = [0, 1, -1, 2**63 - 1, -(2**63), 2**53 + 1]
int32 = st.one_of(st.sampled_from(INT32_EDGES), st.integers(-(2**31), 2**31 - 1))
int64 = st.one_of(st.sampled_from(INT64_EDGES), st.integers(-(2**63), 2**63 - 1))
valid_paths = st.lists(
    st.sampled_from(["a.csv", "*.csv", "sub/**/x.parquet", "d/", "x.jsonl.gz"]), max_size=3
)
fuzz_paths = st.lists(
    st.one_of(st.sampled_from(["../x", "a/../../x", "/abs", "~/x", "a\x00b", "", "x" * 5000]), text),
    min_size=1,
    max_size=3,
)


class Fields:
    """Draws each field of one request: valid, unless it is among the few chosen to be fuzzed."""

    def __init__(self, data: st.DataObject, names: list[str]) -> None:
        self.data = data
        everything = data.draw(st.integers(0, 9)) == 0
        count = data.draw(st.sampled_from([0, 1, 1, 1, 2, 3]))
        chosen = data.draw(st.lists(st.sampled_from(names), min_size=count, max_size=count))
        self.fuzzed = set(names) if everything else set(chosen)

    def __call__(self, name: str, valid: st.SearchStrategy[Any], fuzz: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(fuzz if name in self.fuzzed else valid, label=name)


# Fuzzed requests change the server's state, so what a draw means may depend on it, but what is
# drawn must not (hypothesis checks that replaying a choice sequence draws the same shapes): state is
# looked up after the draw, e.g. an index drawn from a fixed range picks one of the scratch jobs.
def pick(items: list[str]) -> st.SearchStrategy[str]:
    """One of ``items`` (read when drawn, newest first), or "" when there are none."""
    return st.integers(0, 63).map(lambda i: items[-1 - i % len(items)] if items else "")


def scratch_job(api: Api, newest: int = 64) -> st.SearchStrategy[str]:
    return st.integers(0, newest - 1).map(lambda i: api.scratch[-1 - i % len(api.scratch)])


def job_ids(api: Api) -> st.SearchStrategy[str]:
    return st.one_of(scratch_job(api), hex32, text)


def table_refs(valid_table: str = "scratch") -> st.SearchStrategy[common_pb2.TableRef]:
    return st.builds(
        common_pb2.TableRef,
        catalog=st.one_of(st.sampled_from(["", "default"]), text),
        namespace=st.one_of(st.just("demo"), text),
        table=st.one_of(st.sampled_from([valid_table, "events"]), text),
    )


def valid_table_ref(table: str = "scratch") -> st.SearchStrategy[common_pb2.TableRef]:
    return st.sampled_from(["", "default"]).map(
        lambda catalog: common_pb2.TableRef(catalog=catalog, namespace="demo", table=table)
    )


def ingest_tasks(
    valid: bool, host: st.SearchStrategy[str], max_size: int = 4
) -> st.SearchStrategy[list[common_pb2.IngestTask]]:
    if valid:
        task = st.builds(common_pb2.IngestTask, task_id=valid_ids, host=host, paths=valid_paths)
        return st.lists(task, min_size=1, max_size=max_size, unique_by=lambda t: t.task_id)
    task = st.builds(
        common_pb2.IngestTask,
        task_id=ids,
        host=st.one_of(host, ids),
        paths=st.one_of(valid_paths, fuzz_paths),
    )
    return st.lists(task, max_size=max_size)


def optional(message: Message, name: str, value: Any) -> None:
    if value is not None:
        getattr(message, name).CopyFrom(value)


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        short_text,
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=8,
    )


def descriptor(data: st.DataObject, api: Api, job_id: str, task_id: str) -> dict[str, Any]:
    """A manifest description for ``task_id`` of ``job_id``, a few fields fuzzed (paths name the
    sandboxes' files: the coordinator deletes the files a losing report names)."""
    other_id, other_uuid = data.draw(int64), data.draw(text)
    try:
        snapshot_id, commit_uuid = api.snapshot_of(job_id)
    except Exception:  # noqa: BLE001 - not a job: any ids
        snapshot_id, commit_uuid = other_id, other_uuid
    name = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=20)
    sandboxed = st.one_of(
        st.integers(0, POOL - 1).map(lambda i: api.pool(i).as_uri()),  # exists (until a loser deletes it)
        st.integers(0, POOL - 1).map(lambda i: api.pool(i).as_uri()),
        name.map(lambda n: (api.sandbox / n).as_uri()),  # does not exist
        st.integers(0, POOL - 1).map(lambda i: (api.outside / f"pool-{i}.avro").as_uri()),  # outside
        name.map(lambda n: f"{(api.sandbox / '..' / '..' / '..' / 'x').as_uri()}{n}"),  # climbs out
        short_text.map(lambda t: f"{api.sandbox.as_uri()}/{t}"),  # anything below the sandbox
    )
    counter = st.one_of(st.integers(0, 10**6), int64, st.integers(2**53 - 2, 2**53 + 1), st.integers(-5, 0))
    bound = st.one_of(
        st.none(),
        st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode()),
        short_text,
        json_values(),
    )
    partition = st.fixed_dictionaries(
        {"contains_null": st.booleans() | json_values()},
        optional={"contains_nan": st.none() | st.booleans(), "lower_bound": bound, "upper_bound": bound},
    )
    field = Fields(
        data, ["task_id", "snapshot_id", "commit_uuid", "paths", "counts", "spec", "partitions", "metrics"]
    )
    # the valid values: the real manifest written for this task, else pool files (which exist but
    # are no manifests); what is drawn does not depend on which (see pick())
    base = api.written.get(job_id, {}).get(task_id)

    def valid(key: str, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return strategy.map(lambda drawn: base[key] if base else drawn)

    pooled = st.integers(0, POOL - 1).map(lambda i: api.pool(i).as_uri())
    out: dict[str, Any] = {
        "task_id": field("task_id", st.just(task_id), ids),
        "snapshot_id": field("snapshot_id", st.just(snapshot_id), int64),
        "commit_uuid": field("commit_uuid", st.just(commit_uuid), text),
        "manifest_path": field("paths", valid("manifest_path", pooled), sandboxed),
        "manifest_length": field("counts", valid("manifest_length", st.integers(1, 10**6)), counter),
        "partition_spec_id": field("spec", valid("partition_spec_id", st.just(0)), int32),
        "added_files_count": field("counts", valid("added_files_count", st.integers(1, 10)), counter),
        "added_rows_count": field("counts", valid("added_rows_count", st.integers(1, 10**6)), counter),
        "added_bytes": field("counts", valid("added_bytes", st.integers(1, 10**6)), counter),
        "partitions": field("partitions", valid("partitions", st.just([])), st.lists(partition, max_size=2)),
        "data_files": field(
            "paths", valid("data_files", st.lists(pooled, max_size=3)), st.lists(sandboxed, max_size=3)
        ),
    }
    metrics = st.fixed_dictionaries({"files": counter, "records": counter, "bytes": counter})
    if "metrics" in field.fuzzed:
        out["partition_metrics"] = data.draw(st.dictionaries(short_text, metrics, max_size=2))
    mutation = data.draw(st.sampled_from(["none", "none", "drop", "retype"]))
    if mutation == "drop":
        out.pop(data.draw(st.sampled_from(sorted(out))))
    elif mutation == "retype":
        out[data.draw(st.sampled_from(sorted(out)))] = data.draw(json_values())
    return out


def new_scratch_job(api: Api, data: st.DataObject) -> str:
    """A fresh open job on demo.scratch (so that reports and assignments can still be accepted), with
    a real manifest written (not recorded) for each of its tasks: the base of fuzzed descriptions."""
    tasks = data.draw(st.lists(valid_ids, min_size=1, max_size=2, unique=True), label="scratch tasks")
    job_id = start_fuzz_job(api, "scratch", [common_pb2.IngestTask(task_id=t, host="1") for t in tasks])
    api.scratch.append(job_id)
    table = api.catalog.load_table("demo.scratch")
    snapshot = api.service.status(job_id).snapshot
    for task_id in tasks:
        source = write_csv(api.outside.parent / "sources" / f"{job_id}-{task_id}.csv", rows(0, 3))
        written = write_task_manifest(snapshot, table, [source], task_id)
        assert written is not None
        api.written.setdefault(job_id, {})[task_id] = written.to_dict()
    return job_id
