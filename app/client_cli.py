"""`floe job ...` and `floe table create`: the command-line client."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict

from app.client import TERMINAL_STATES
from app.errors import InvalidArgument
from app.proto_gen.api import common_pb2


def _print(message: Any) -> None:
    data = MessageToDict(message, preserving_proto_field_name=True)
    status, where = (message, data) if isinstance(message, common_pb2.JobStatus) else (None, data.get("status"))
    if status is None and isinstance(where, dict) and message.HasField("status"):
        status = message.status
    if status is not None and status.hosts and isinstance(where, dict):
        # every field of every host, zeros and false included: "live": false is the point
        where["hosts"] = [
            MessageToDict(h, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            for h in status.hosts
        ]
    print(json.dumps(data, indent=2))


def parse_task(text: str) -> Any:
    """ID[:HOST[:GLOB[,GLOB...]]] -> TaskArg."""
    from app.client import TaskArg

    parts = text.split(":", 2)
    if not parts[0]:
        raise InvalidArgument(f"--task {text!r}: the task id is empty (format ID[:HOST[:GLOB,GLOB...]])")
    return TaskArg(
        parts[0],
        parts[1] if len(parts) > 1 else "",
        [p for p in (parts[2].split(",") if len(parts) > 2 else []) if p],
    )


def parse_source(text: str) -> tuple[str, list[str]]:
    """HOST:GLOB[,GLOB...] -> (host, globs)."""
    host, sep, rest = text.partition(":")
    globs = [g for g in rest.split(",") if g]
    if not sep or not host or not globs:
        raise InvalidArgument(
            f"--source {text!r} must be HOST:GLOB[,GLOB...] (globs relative to that host's WORKER_DATA_BASE)"
        )
    return host, globs


def parse_pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{flag} {value!r} must be KEY=VALUE")
        pairs[key] = rest
    return pairs


def _split_table(text: str) -> tuple[str, str]:
    namespace, _, table = text.rpartition(".")
    if not namespace or not table:
        raise InvalidArgument(f"table {text!r} must be NAMESPACE.TABLE")
    return namespace, table


def progress_line(status: common_pb2.JobStatus, width: int = 30) -> str:
    expected = status.expected_manifests or 0
    done = status.manifests_accepted
    filled = int(width * done / expected) if expected else 0
    bar = "#" * filled + "." * (width - filled)
    state = common_pb2.JobState.Name(status.state)
    planning = [h.host for h in status.hosts if h.planning]
    if status.planning:
        state += f" (planning on {', '.join(planning) or 'hosts'})"
    return f"[{bar}] {done}/{expected} manifests  {status.rows_written:,} rows  {state}"


def watch(client: Any, job_id: str, out: Any = sys.stderr) -> common_pb2.JobStatus:
    last = None
    for status in client.watch(job_id):
        last = status
        out.write("\r" + progress_line(status))
        out.flush()
        if status.state in TERMINAL_STATES:
            break
    out.write("\n")
    assert last is not None
    return last


def cmd_job(args: argparse.Namespace) -> int:
    from app.client import CoordinatorClient

    with CoordinatorClient(args.coordinator) as client:
        if args.job_command == "start":
            namespace, table = _split_table(args.table)
            props = parse_pairs(args.prop, "--prop")
            reply = client.start_job(
                namespace,
                table,
                args.catalog,
                args.requester,
                args.timeout,
                [parse_task(t) for t in args.task],
                False if args.no_auto_commit else None,
                props,
                args.idempotency_key,
                [parse_source(src) for src in args.source],
                args.schema_mode,
            )
            _print(reply)
            if args.watch:
                final = watch(client, reply.job_id)
                return 0 if final.state == common_pb2.COMPLETED else 1
        elif args.job_command == "status":
            _print(client.status(args.job_id))
        elif args.job_command == "watch":
            final = watch(client, args.job_id)
            _print(final)
            return 0 if final.state == common_pb2.COMPLETED else 1
        elif args.job_command == "commit":
            _print(client.commit(args.job_id))
        elif args.job_command == "cancel":
            _print(client.cancel(args.job_id, args.reason))
        elif args.job_command == "list":
            states = [common_pb2.JobState.Value(s.upper()) for s in args.state]
            for job in client.list(args.limit, states):
                print(
                    f"{job.job_id}  {common_pb2.JobState.Name(job.state):<10} {job.table.namespace}.{job.table.table}  "
                    f"{job.manifests_accepted}/{job.expected_manifests} manifests  {job.rows_written} rows"
                )
    return 0


def hosts_table(hosts: Sequence[common_pb2.HostStatus], now: float | None = None) -> str:
    """One line per host: name, live or not, how long ago it heartbeat, its worker processes."""
    import time

    now = time.time() if now is None else now
    rows = [("HOST", "LIVE", "LAST HEARTBEAT", "CONCURRENCY")]
    for h in hosts:
        ago = "never" if not h.HasField("last_heartbeat") else f"{max(0.0, now - h.last_heartbeat.ToNanoseconds() / 1e9):.0f}s ago"
        rows.append((h.host, "yes" if h.live else "no", ago, str(h.concurrency or "?")))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def cmd_hosts(args: argparse.Namespace) -> int:
    from app.client import CoordinatorClient

    with CoordinatorClient(args.coordinator) as client:
        hosts = client.hosts()
    if args.json:
        print(json.dumps([MessageToDict(h, preserving_proto_field_name=True) for h in hosts], indent=2))
    elif hosts:
        print(hosts_table(hosts))
    else:
        print("no host has heartbeat within the last hour")
    return 0


def add_hosts_command(sub: Any) -> None:
    hosts = sub.add_parser("hosts", help="list the worker hosts seen recently: live, last heartbeat, concurrency")
    hosts.add_argument(
        "--coordinator", default=None, help="host:port (default FLOE_COORDINATOR or 127.0.0.1:50051)"
    )
    hosts.add_argument("--json", action="store_true", help="print the ListHosts reply as JSON")
    hosts.set_defaults(func=cmd_hosts)


def add_job_commands(sub: Any) -> None:
    job = sub.add_parser("job", help="start, watch and manage jobs on the coordinator")
    job.add_argument(
        "--coordinator", default=None, help="host:port (default FLOE_COORDINATOR or 127.0.0.1:50051)"
    )
    jobs = job.add_subparsers(dest="job_command", required=True)
    start = jobs.add_parser("start", help="start a job")
    start.add_argument("table", help="NAMESPACE.TABLE")
    start.add_argument("--catalog", default="")
    start.add_argument("--requester", default="")
    start.add_argument("--timeout", type=int, default=0, help="job_timeout_seconds (0 = default 3600)")
    start.add_argument("--task", action="append", default=[], help="ID[:HOST[:GLOB,GLOB...]] (repeatable)")
    start.add_argument(
        "--source",
        action="append",
        default=[],
        help="HOST:GLOB[,GLOB...]: files on HOST that the host plans into tasks itself (repeatable)",
    )
    start.add_argument("--no-auto-commit", action="store_true")
    start.add_argument("--prop", action="append", default=[], help="snapshot property KEY=VALUE")
    start.add_argument("--idempotency-key", default="")
    start.add_argument(
        "--schema-mode",
        default="",
        choices=["strict", "evolve", "ignore"],
        help="source columns the table lacks: strict refuses them, evolve adds them (and widens types), "
        "ignore leaves them out (default: the table's floe.schema-mode, else strict)",
    )
    start.add_argument("--watch", action="store_true", help="show a progress bar until the job ends")
    for name in ("status", "watch", "commit"):
        p = jobs.add_parser(name, help=f"{name} a job")
        p.add_argument("job_id")
    cancel = jobs.add_parser("cancel", help="cancel a job")
    cancel.add_argument("job_id")
    cancel.add_argument("--reason", default="")
    listing = jobs.add_parser("list", help="list recent jobs")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument(
        "--state",
        action="append",
        default=[],
        type=str.upper,
        choices=[n for n in common_pb2.JobState.keys() if n != "JOB_STATE_UNSPECIFIED"],  # noqa: SIM118
    )
    job.set_defaults(func=cmd_job)


def cmd_table_create(args: argparse.Namespace) -> int:
    from app.catalog import get_catalog
    from app.settings import get_settings
    from app.tables import create_table

    catalog = get_catalog(get_settings(), args.catalog or None)
    props = parse_pairs(args.property, "--property")
    table = create_table(
        catalog,
        args.table,
        schema_file=args.schema,
        sample=args.from_sample,
        partition_by=args.partition_by,
        properties=props,
    )
    print(f"created {'.'.join(table.name())} at {table.location()}")
    print(table.schema())
    print(table.spec())
    return 0


def add_table_commands(sub: Any) -> None:
    table = sub.add_parser("table", help="make tables")
    tables = table.add_subparsers(dest="table_command", required=True)
    create = tables.add_parser("create", help="create a table from a schema file or a sample source file")
    create.add_argument("table", help="NAMESPACE.TABLE (the namespace is created if needed)")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--schema", help='an Iceberg schema as JSON ({"type": "struct", "fields": [...]})')
    source.add_argument(
        "--from-sample", help="a CSV, JSON-lines or Parquet file whose columns become the schema"
    )
    create.add_argument(
        "--partition-by",
        default="",
        help="e.g. 'category,day(ts)' (identity, year, month, day, hour, bucket[N](c), truncate[W](c))",
    )
    create.add_argument("--property", action="append", default=[], help="table property KEY=VALUE")
    create.add_argument("--catalog", default="")
    create.set_defaults(func=cmd_table_create)
