"""Validating what callers send, with messages that name the field and the rule."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from app import keys
from app.errors import InvalidArgument
from app.iceberg.schema_evolution import parse_schema_mode
from app.iceberg.summary import check_extra_properties
from app.jobs.model import HostSource, TableRef, TaskSpec
from app.jobs.task_batch import TaskBatch

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_TASKS = 100_000
MAX_PATHS_PER_TASK = 10_000
MAX_TEXT = 256


def check_id(value: str, label: str) -> str:
    if not value:
        raise InvalidArgument(f"{label} is required")
    if not _ID.fullmatch(value):
        raise InvalidArgument(
            f"{label}={value[:80]!r} is not a valid id: use 1-128 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_job_id(value: str, label: str = "job_id") -> str:
    if not value:
        raise InvalidArgument(f"{label} is required")
    if not _JOB_ID.fullmatch(value):
        raise InvalidArgument(f"{label}={value[:80]!r} is not a job id (32 lowercase hex characters)")
    return value


def check_relative_pattern(pattern: str, label: str) -> str:
    if not pattern:
        raise InvalidArgument(f"{label} is empty")
    if "\x00" in pattern or len(pattern) > 4096:
        raise InvalidArgument(f"{label} is not a valid path")
    path = PurePosixPath(pattern)
    if path.is_absolute() or pattern.startswith("~"):
        raise InvalidArgument(f"{label}={pattern!r} must be relative to the host's WORKER_DATA_BASE")
    if ".." in path.parts:
        raise InvalidArgument(
            f"{label}={pattern!r} must not contain '..' (paths stay below WORKER_DATA_BASE)"
        )
    return pattern


MAX_NAME = 255  # a catalog, namespace level or table name (catalogs store names in 255-character columns)


def check_table_name(namespace: str, table: str, catalog: str = "") -> None:
    """The one identifier check: every table reference Floe loads passes through it."""
    if not table:
        raise InvalidArgument("table.table is required (the table's name)")
    if not namespace:
        raise InvalidArgument("table.namespace is required")
    if any(not part.strip() for part in namespace.split(".")):
        raise InvalidArgument(f"table.namespace={namespace[:80]!r} has an empty level")
    for label, value in (("table.catalog", catalog), ("table.namespace", namespace), ("table.table", table)):
        if len(value) > MAX_NAME or any(ord(c) < 32 for c in value) or value != value.strip():
            raise InvalidArgument(
                f"{label}={value[:80]!r} is not a valid name (at most {MAX_NAME} characters, "
                "no control characters, no surrounding blanks)"
            )
    if "." in table:
        raise InvalidArgument(f"table.table={table!r} must not contain '.' (put the namespace in table.namespace)")


def check_table(table: TableRef | None) -> TableRef:
    if table is None:
        raise InvalidArgument("table is required ({catalog, namespace, table})")
    check_table_name(table.namespace, table.table, table.catalog)
    return table


@dataclass(frozen=True)
class StartJobInput:
    table: TableRef | None
    requester: str = ""
    job_timeout_seconds: int = 0
    tasks: Sequence[TaskSpec] = field(default_factory=list)  # or columns (app.jobs.task_batch.TaskBatch)
    expected_manifest_count: int = 0
    auto_commit: bool | None = None
    snapshot_properties: dict[str, str] = field(default_factory=dict)
    idempotency_key: str = ""
    sources: list[HostSource] = field(default_factory=list)
    schema_mode: str = ""  # strict | evolve | ignore; "" = the table's floe.schema-mode (strict when unset)

    def validated(self) -> StartJobInput:
        check_table(self.table)
        if self.schema_mode:
            parse_schema_mode(self.schema_mode, "schema_mode")
        if len(self.requester) > MAX_TEXT:
            raise InvalidArgument(f"requester is longer than {MAX_TEXT} characters")
        if self.job_timeout_seconds < 0:
            raise InvalidArgument(
                f"job_timeout_seconds={self.job_timeout_seconds} must not be negative (0 = default)"
            )
        if self.job_timeout_seconds > keys.MAX_JOB_TIMEOUT_SECONDS:
            raise InvalidArgument(
                f"job_timeout_seconds={self.job_timeout_seconds} exceeds the maximum of {keys.MAX_JOB_TIMEOUT_SECONDS}"
            )
        if self.expected_manifest_count < 0:
            raise InvalidArgument(
                f"expected_manifest_count={self.expected_manifest_count} must not be negative"
            )
        if self.expected_manifest_count > MAX_TASKS:
            raise InvalidArgument(
                f"expected_manifest_count={self.expected_manifest_count} exceeds {MAX_TASKS}"
            )
        if self.tasks and self.expected_manifest_count and self.expected_manifest_count != len(self.tasks):
            raise InvalidArgument(
                f"expected_manifest_count={self.expected_manifest_count} but {len(self.tasks)} tasks were given "
                "(one manifest per task; leave it 0)"
            )
        if not (
            isinstance(self.tasks, TaskBatch)
            and self.tasks.plainly_valid(MAX_TASKS, MAX_PATHS_PER_TASK, PLANNED_TASK_PREFIX)
        ):
            check_tasks(list(self.tasks))
        check_sources(self.sources)
        if self.sources and self.expected_manifest_count:
            raise InvalidArgument(
                f"expected_manifest_count={self.expected_manifest_count} cannot be given with sources: "
                "the hosts' plans decide how many manifests to expect (leave it 0)"
            )
        if self.idempotency_key and (
            len(self.idempotency_key) > MAX_TEXT or any(ord(c) < 32 for c in self.idempotency_key)
        ):
            raise InvalidArgument(f"idempotency_key must be 1-{MAX_TEXT} printable characters")
        check_extra_properties(self.snapshot_properties)
        return self


MAX_SOURCE_HOSTS = 1_000
PLANNED_TASK_PREFIX = "plan:"  # the ids of the tasks hosts plan: plan:<host>:<n>


def check_sources(sources: list[HostSource]) -> None:
    if len(sources) > MAX_SOURCE_HOSTS:
        raise InvalidArgument(f"{len(sources)} sources exceed the maximum of {MAX_SOURCE_HOSTS} hosts per job")
    seen: set[str] = set()
    for i, source in enumerate(sources):
        if not source.host:
            raise InvalidArgument(f"sources[{i}].host is required (only a host sees its own files)")
        check_id(source.host, f"sources[{i}].host")
        if source.host in seen:
            raise InvalidArgument(f"sources[{i}].host={source.host!r} is given twice (list its globs once)")
        seen.add(source.host)
        if not source.paths:
            raise InvalidArgument(f"sources[{i}].paths is empty: give globs relative to WORKER_DATA_BASE")
        if len(source.paths) > MAX_PATHS_PER_TASK:
            raise InvalidArgument(f"sources[{i}] has more than {MAX_PATHS_PER_TASK} paths")
        for j, pattern in enumerate(source.paths):
            check_relative_pattern(pattern, f"sources[{i}].paths[{j}]")


def check_tasks(tasks: list[TaskSpec]) -> None:
    if len(tasks) > MAX_TASKS:
        raise InvalidArgument(f"{len(tasks)} tasks exceed the maximum of {MAX_TASKS} per job")
    seen: set[str] = set()
    for i, task in enumerate(tasks):
        check_id(task.task_id, f"tasks[{i}].task_id")
        if task.task_id in seen:
            raise InvalidArgument(f"tasks[{i}].task_id={task.task_id!r} is given twice")
        if task.task_id.startswith(PLANNED_TASK_PREFIX) and not task.pieces:
            raise InvalidArgument(
                f"tasks[{i}].task_id={task.task_id!r}: ids starting with {PLANNED_TASK_PREFIX!r} are reserved "
                "for the tasks hosts plan from sources"
            )
        seen.add(task.task_id)
        if task.host:
            check_id(task.host, f"tasks[{i}].host")
        if len(task.paths) > MAX_PATHS_PER_TASK:
            raise InvalidArgument(f"tasks[{i}] has more than {MAX_PATHS_PER_TASK} paths")
        for j, pattern in enumerate(task.paths):
            check_relative_pattern(pattern, f"tasks[{i}].paths[{j}]")
