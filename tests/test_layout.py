"""The layout rules, read from the source: dependencies run one way, the core stays plain, one Redis
holder, one environment reader. Every module of app/ and workers/ is parsed (imports inside functions
count too); the rules are those of README's "Layout" section."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "workers")
CORE = ("app.iceberg", "app.jobs")
CORE_FORBIDDEN = ("celery", "kombu", "grpc", "grpc_health", "grpc_reflection", "google.protobuf", "app.proto_gen")
EDGES = ("app.grpc", "app.celery_app", "app.cli", "app.stack", "app.runtime", "app.client", "app.demo")
# The only module holding a Redis client, and the only one reading the environment. The local stack
# and the demo start child processes: they may build the children's environment from this one's.
REDIS_HOLDER = "app.jobs.store"
ENV_READER = "app.settings"
CHILD_ENV_BUILDERS = ("app.stack.local", "app.demo")


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            if "proto_gen" in rel.parts:
                continue
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts), path


def _imports(name: str, path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:  # `from app import keys` imports the module app.keys
                yield node.lineno, f"{module}.{alias.name}"


def _within(module: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _part(module: str) -> str:
    """``app.jobs.store`` -> ``app.jobs``; ``workers.tasks`` -> ``workers.tasks``."""
    return ".".join(module.split(".")[:2])


MODULES = dict(_modules())
LOCAL = {m for m in MODULES} | {_part(m) for m in MODULES}


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        for _, target in _imports(name, path):
            if not _within(target, PACKAGES):
                continue
            # keep the longest local module the import names (``from app import keys`` -> app.keys)
            while target not in LOCAL and "." in target:
                target = target.rpartition(".")[0]
            if target in PACKAGES or _part(target) == _part(name):
                continue
            graph.setdefault(_part(name), set()).add(_part(target))
    return graph


def test_the_rules_see_every_module() -> None:
    assert {"app.jobs.store", "app.settings", "app.iceberg.commit", "workers.tasks"} <= set(MODULES)
    assert len(MODULES) > 40


def test_app_never_imports_workers() -> None:
    found = [
        f"{name} line {line}: imports {target}"
        for name, path in MODULES.items()
        if _within(name, "app")
        for line, target in _imports(name, path)
        if _within(target, "workers")
    ]
    assert not found, "app/ must not import workers/ (workers/ builds on app/):\n" + "\n".join(found)


def test_no_import_cycle_between_parts() -> None:
    graph = _edges()
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in stack:
                cycle = stack[stack.index(nxt) :] + [nxt]
                if min(cycle[:-1]) == cycle[0]:  # report each cycle once
                    cycles.append(cycle)
                continue
            if len(stack) < 12:
                visit(nxt, [*stack, nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert not cycles, "import cycles between parts:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("core", CORE)
def test_the_core_imports_no_transport_or_queue(core: str) -> None:
    found = [
        f"{name} line {line}: imports {target}"
        for name, path in MODULES.items()
        if _within(name, core)
        for line, target in _imports(name, path)
        if _within(target, CORE_FORBIDDEN) or _within(target, EDGES) or _within(target, "workers")
    ]
    assert not found, f"{core} must stay plain (no celery, kombu, grpc, stubs or edges):\n" + "\n".join(found)


def _calls(path: Path) -> Iterator[tuple[int, str]]:
    """Dotted names of attribute chains used in the module (``os.environ.get``, ``redis.Redis``)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute):
            chain: list[str] = []
            cur: ast.expr = node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name):
                yield node.lineno, ".".join([cur.id, *reversed(chain)])
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "redis"):
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _called(path: Path) -> Iterator[tuple[int, str]]:
    """Dotted names of what the module calls (``redis.Redis.from_url(...)``); imported names as such."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = {
        alias.asname or alias.name: f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("redis")
        for alias in node.names
    }
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        chain: list[str] = []
        cur: ast.expr = node.func
        while isinstance(cur, ast.Attribute):
            chain.append(cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name):
            yield node.lineno, ".".join([aliases.get(cur.id, cur.id), *reversed(chain)])


def test_only_the_job_store_holds_a_redis_client() -> None:
    makers = ("redis.Redis", "redis.StrictRedis", "redis.from_url", "redis.client.Redis", "redis.asyncio")
    found = [
        f"{name} line {line}: {used}"
        for name, path in MODULES.items()
        if name != REDIS_HOLDER
        for line, used in _called(path)
        if any(used == m or used.startswith(m + ".") for m in makers)
    ]
    assert not found, f"only {REDIS_HOLDER} may make a Redis client:\n" + "\n".join(found)


def test_only_settings_reads_the_environment() -> None:
    readers = ("os.environ", "os.getenv", "os.environb", "os.getenvb")
    found = [
        f"{name} line {line}: {used}"
        for name, path in MODULES.items()
        if name != ENV_READER and name not in CHILD_ENV_BUILDERS
        for line, used in _calls(path)
        if any(used == r or used.startswith(r + ".") for r in readers)
    ]
    assert not found, f"only {ENV_READER} may read the environment:\n" + "\n".join(found)


def test_the_rules_catch_what_they_forbid(tmp_path: Path) -> None:
    # Given a module that breaks each rule, each rule's reader sees the break.
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\nimport redis\nfrom workers import tasks\nfrom celery import Celery\n"
        "def f():\n    from app.jobs import store\n    return os.environ.get('X'), redis.Redis.from_url('u')\n"
    )
    imports = {target for _, target in _imports("app.jobs.bad", bad)}
    assert {"workers.tasks", "celery", "app.jobs.store"} <= imports
    used = {u for _, u in _calls(bad)}
    assert "os.environ.get" in used
    assert "redis.Redis.from_url" in {u for _, u in _called(bad)}
    aliased = tmp_path / "aliased.py"
    aliased.write_text("from redis import Redis as R\nclient = R(host='h')\n")
    assert {u for _, u in _called(aliased)} == {"redis.Redis"}
