"""Run one ingest task in its own OS process: JSON on stdin, the manifest description on stdout."""

from __future__ import annotations

import json
import sys

from pyiceberg.catalog import load_catalog

from app.iceberg import DistributedSnapshot
from workers.conversion import write_task_manifest


def main() -> None:
    request = json.load(sys.stdin)
    props = dict(request["catalog"])
    catalog = load_catalog(props.pop("name"), **props)
    table = catalog.load_table(request["table"])
    snapshot = DistributedSnapshot.from_dict(request["snapshot"])
    descriptor = write_task_manifest(snapshot, table, request["paths"], request["task_id"])
    json.dump(descriptor.to_dict() if descriptor else None, sys.stdout)


if __name__ == "__main__":
    main()
