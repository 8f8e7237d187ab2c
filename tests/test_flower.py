"""Flower still shows every task with its job id, grouped ones too (issue 16 cut the price of task events: no task-sent or
task-started events, task events batched every 0.25 s; workers/task_events.py)."""

from __future__ import annotations

import ast
import base64
import json
import urllib.request
from pathlib import Path

import pytest

from app.client import CoordinatorClient, TaskArg
from app.proto_gen.api import common_pb2
from app.stack import LocalStack, free_port, free_port_block
from tests.support.processes import stack_env
from tests.support.system import wait_until
from tests.support.tables import make_table, rows, write_csv

pytestmark = pytest.mark.integration


def _flower_tasks(stack: LocalStack) -> dict[str, dict[str, object]]:
    request = urllib.request.Request(f"{stack.flower_url}/api/tasks")
    token = base64.b64encode((stack.flower_auth or "").encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return json.loads(reply.read())  # type: ignore[no-any-return]
    except OSError:
        return {}


def test_flower_shows_every_task_with_its_job_id(tmp_path: Path) -> None:
    home = tmp_path / "home"
    stack = LocalStack(
        hosts=2,
        home=home,
        # groups never hand tasks back here, however loaded the machine (the grouping is what is shown)
        env={**stack_env(home), "FLOE_GROUP_BUDGET_MS": "600000"},
        coordinator_port=free_port(),
        worker_base_port=free_port_block(2),
        flower_port=free_port(),
        concurrency=1,
    )
    with stack:
        stack.wait_healthy(timeout=120)
        from pyiceberg.catalog import load_catalog

        catalog = load_catalog(stack.settings.catalog_name, **stack.settings.catalog_properties)
        catalog.create_namespace("demo")
        make_table(catalog, "demo.events")
        tasks = []
        for i in range(6):
            host, _, _ = stack.hosts[i % 2]
            write_csv(Path(stack.hosts[i % 2][1]) / f"{i}.csv", rows(i * 10, 10))
            tasks.append(TaskArg(f"t{i}", host, [f"{i}.csv"]))
        with CoordinatorClient(stack.coordinator_target, timeout=60) as client:
            reply = client.start_job("demo", "events", requester="flower", tasks=tasks)
            status = client.wait(reply.job_id, timeout=120)
        assert status.state == common_pb2.COMPLETED, status.failure_reason

        def shown() -> dict[str, dict[str, object]] | None:
            ours = {
                uuid: t for uuid, t in _flower_tasks(stack).items()
                if t.get("name") == "floe.ingest" and reply.job_id in str(t.get("args"))
            }  # fmt: skip
            done = [t for t in ours.values() if t.get("state") == "SUCCESS"]
            return ours if len(done) == len(tasks) else None

        ours = wait_until(shown, 60, "Flower to show the job's tasks, succeeded", interval=0.5)
        assert isinstance(ours, dict)
        shown_ids = sorted(str(t["args"]).split("'")[3] for t in ours.values())
        assert shown_ids == [t.task_id for t in tasks]  # each task once, with its job id and task id

        # A job with many tasks per host sends them several to a message (floe.ingest_many): Flower shows
        # each message with the job id and its tasks' ids, every task of the job once
        many = []
        for i in range(6, 6 + 70):
            host, data_dir, _ = stack.hosts[i % 2]
            write_csv(Path(data_dir) / f"{i}.csv", rows(i * 10, 10))
            many.append(TaskArg(f"t{i}", host, [f"{i}.csv"]))
        with CoordinatorClient(stack.coordinator_target, timeout=60) as client:
            grouped = client.start_job("demo", "events", requester="flower", tasks=many)
            status = client.wait(grouped.job_id, timeout=120)
        assert status.state == common_pb2.COMPLETED, status.failure_reason

        def shown_groups() -> list[list[str]] | None:
            ids = []
            for t in _flower_tasks(stack).values():
                if grouped.job_id in str(t.get("args")) and t.get("state") == "SUCCESS":
                    task_ids = ast.literal_eval(str(t["args"]))[1]
                    ids.append(task_ids if t.get("name") == "floe.ingest_many" else [task_ids])
            return ids if sum(len(g) for g in ids) == len(many) else None

        groups = wait_until(shown_groups, 60, "Flower to show the grouped messages, succeeded", interval=0.5)
        assert isinstance(groups, list)  # 35 tasks per host: 17 messages of two and one of one
        assert sorted(len(g) for g in groups) == [1, 1] + [2] * 34
        assert sorted(t for g in groups for t in g) == sorted(t.task_id for t in many)
