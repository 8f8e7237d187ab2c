"""The tasks a client names in StartJob, kept column by column.

A job may name 100,000 tasks. Made into one Python object each, checked one by one and encoded one by
one, 10,000 of them cost StartJob ~250 ms before Redis sees them; kept as columns (ids, hosts, paths as
the request carries them) they are checked with a few regular expressions over the joined columns and
handed to the CREATE script as twenty chunks of dispatch entries, in a few milliseconds. The quick check only ever accepts:
anything it is not sure of goes through :func:`app.jobs.validation.check_tasks`, which names the problem.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import chain
from operator import itemgetter
from typing import overload

from app.jobs.model import TaskSpec

# what check_tasks accepts, or less: ids (and the distinct hosts but '') one per line ...
_IDS = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\n)*[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# ... and paths one per line with no character JSON escapes (and, counted, no line break inside) ...
_PLAIN_LINES = re.compile(r'[^"\\\x00-\x09\x0b-\x1f\x7f]*')
# ... none absolute, none starting with '~', none with a '..' part
_DOTDOT = re.compile(r"(?:^|\n|/)\.\.(?:/|\n|$)")
MAX_PATH = 4096


class TaskBatch(Sequence[TaskSpec]):
    """Tasks as columns: ``ids[i]`` runs on ``hosts[i]`` ('' = the shared ingest queue) over ``paths[i]``."""

    def __init__(self, ids: list[str], hosts: list[str], paths: Sequence[Sequence[str]]) -> None:
        self.ids = ids
        self.hosts = hosts
        self.paths = paths
        self._plain: bool | None = None
        self._one_each = False  # every task names exactly one path (then _flat[i] is task i's)
        self._flat: list[str] = []
        self._text = ""

    @classmethod
    def of(cls, tasks: Sequence[TaskSpec]) -> TaskBatch:
        if isinstance(tasks, TaskBatch):
            return tasks
        return cls([t.task_id for t in tasks], [t.host for t in tasks], [t.paths for t in tasks])

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> TaskSpec: ...

    @overload
    def __getitem__(self, index: slice) -> list[TaskSpec]: ...

    def __getitem__(self, index: int | slice) -> TaskSpec | list[TaskSpec]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return TaskSpec(self.ids[index], self.hosts[index], tuple(self.paths[index]))

    def __iter__(self) -> Iterator[TaskSpec]:
        for task_id, host, paths in zip(self.ids, self.hosts, self.paths, strict=True):
            yield TaskSpec(task_id, host, tuple(paths))

    def _plain_paths(self) -> bool:
        """Whether no path holds a character JSON escapes (a quote, a backslash, a control character)."""
        if self._plain is None:
            # one path each, the usual case: taken by index, 5x faster than chaining 10,000 protobuf
            # repeated fields (measured)
            self._one_each = set(map(len, self.paths)) == {1}
            if self._one_each:
                self._flat = list(map(itemgetter(0), self.paths))
            else:
                self._flat = list(chain.from_iterable(self.paths))
            self._text = "\n".join(self._flat)
            self._plain = (
                _PLAIN_LINES.fullmatch(self._text) is not None
                and self._text.count("\n") == max(0, len(self._flat) - 1)
            )
        return self._plain

    def plainly_valid(self, max_tasks: int, max_paths_per_task: int, reserved_prefix: str) -> bool:
        """True when every task is plainly valid: at most ``max_tasks``, ids and hosts made of the usual
        id characters, ids unique and not starting with ``reserved_prefix``, at most
        ``max_paths_per_task`` paths each, every path relative, below the base (no '..' part) and free
        of characters JSON escapes. False only means "not sure": ask check_tasks."""
        n = len(self.ids)
        if n > max_tasks:
            return False
        if n == 0:
            return True
        distinct = set(self.hosts) - {""}  # a job has few hosts
        ids, hosts = "\n".join(self.ids), "\n".join(distinct)
        if len(self.hosts) != n or len(self.paths) != n or ids.count("\n") != n - 1:
            return False  # a line break inside an id
        if distinct and (hosts.count("\n") != len(distinct) - 1 or _IDS.fullmatch(hosts) is None):
            return False
        if _IDS.fullmatch(ids) is None or len(set(self.ids)) != n:
            return False
        if ids.startswith(reserved_prefix) or f"\n{reserved_prefix}" in ids:
            return False
        if not self._plain_paths():
            return False
        if not self._one_each and max(map(len, self.paths)) > max_paths_per_task:
            return False
        flat, text = self._flat, self._text
        if not flat:
            return True
        if max(map(len, flat)) > MAX_PATH:
            return False
        if not text or text[0] == "\n" or text[-1] == "\n" or "\n\n" in text:  # an empty path
            return False
        if text[0] in "/~" or "\n/" in text or "\n~" in text:  # absolute, or the home directory
            return False
        return ".." not in text or _DOTDOT.search(text) is None

    def host_counts(self) -> dict[str, int]:
        return dict(Counter(self.hosts))

    def specs(self) -> list[str]:
        """Every task's spec JSON, as :meth:`TaskSpec.to_json` writes it (ids and hosts hold no control
        character: checked before)."""
        if self._plain_paths() and self._one_each:
            # one path each (the usual case): one string format per task, in C
            return list(map('{"host": "%s", "paths": ["%s"]}'.__mod__, zip(self.hosts, self._flat, strict=True)))
        if self._plain:  # no escaping needed
            quoted = ['"' + joined + '"' if joined else "" for joined in map('", "'.join, self.paths)]
            return list(map('{"host": "%s", "paths": [%s]}'.__mod__, zip(self.hosts, quoted, strict=True)))
        return [json.dumps({"host": host, "paths": list(paths)}) for host, paths in zip(self.hosts, self.paths, strict=True)]

    def dispatch_chunks(self, size: int) -> list[str]:
        """The tasks' dispatch entries, ``size`` to a chunk, one line each: '<host>/<task_id>\\1<spec>'
        (what the CREATE script records; each spec reaches the tasks hash when its chunk is published)."""
        if self._plain_paths() and self._one_each:
            rows = zip(self.hosts, self.ids, self.hosts, self._flat, strict=True)  # one path each: one pass
            entries = list(map('%s/%s\1{"host": "%s", "paths": ["%s"]}'.__mod__, rows))
        else:
            entries = list(map("%s/%s\1%s".__mod__, zip(self.hosts, self.ids, self.specs(), strict=True)))
        return ["\n".join(entries[i : i + size]) for i in range(0, len(entries), size)]
