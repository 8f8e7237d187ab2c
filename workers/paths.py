"""Confining a task's sources to the host's WORKER_DATA_BASE."""

from __future__ import annotations

from pathlib import Path

from app.errors import InvalidArgument, SourceError
from app.formats import is_supported, source_format
from app.jobs.validation import check_relative_pattern


def _inside(base: Path, path: Path) -> bool:
    try:
        path.relative_to(base)
        return True
    except ValueError:
        return False


def _matches(root: Path, pattern: str, label: str) -> list[Path]:
    """What ``pattern`` matches below ``root``, resolved; a match that resolves outside is refused."""
    check_relative_pattern(pattern, label)
    matches = sorted(root.glob(pattern)) if any(c in pattern for c in "*?[") else [root / pattern]
    found = []
    for match in (m for m in matches if m.exists() or m.is_symlink()):
        real = match.resolve()
        if not _inside(root, real):
            raise InvalidArgument(f"{match} resolves to {real}, outside WORKER_DATA_BASE {root}")
        found.append(real)
    return found


def _files_below(root: Path, directory: Path) -> list[Path]:
    """Every file below ``directory`` (sorted), refusing any that resolves outside ``root``."""
    files = []
    for inner in sorted(directory.rglob("*")):
        if inner.is_file():
            if not _inside(root, inner.resolve()):
                raise InvalidArgument(f"{inner} resolves to {inner.resolve()}, outside WORKER_DATA_BASE {root}")
            files.append(inner)
    return files


def resolve_sources(base: Path, task_id: str, patterns: tuple[str, ...] | list[str]) -> list[Path]:
    """The files a task reads: globs relative to ``base``, or ``base/<task_id>/`` when none are given.

    Absolute paths, '..' and symlinks that lead outside ``base`` are refused.
    """
    root = base.resolve()
    if not root.is_dir():
        raise SourceError(f"WORKER_DATA_BASE {base} is not a directory")
    if not patterns:
        task_dir = root / task_id
        if not _inside(root, task_dir.resolve()):
            raise InvalidArgument(f"task directory {task_dir} leaves WORKER_DATA_BASE {root}")
        if not task_dir.is_dir():
            raise SourceError(f"task {task_id} names no paths and {task_dir} does not exist")
        patterns = [task_id]
    found: list[Path] = []
    for i, pattern in enumerate(patterns):
        matches = _matches(root, pattern, f"paths[{i}]")
        if not matches:
            raise SourceError(
                f"{root / pattern}: no file matches (paths are relative to WORKER_DATA_BASE {root})"
            )
        for real in matches:
            if real.is_dir():
                _files_below(root, real)  # refuse a directory that leads outside, before reading any
            found.append(real)
    return found


def find_host_files(base: Path, patterns: tuple[str, ...] | list[str]) -> tuple[list[Path], list[str]]:
    """What a host's globs match below ``base``: (files, the patterns that matched nothing).

    Directories are walked for supported files (hidden files skipped); a file named directly must be
    of a supported format. The confinement rules of :func:`resolve_sources` apply.
    """
    root = base.resolve()
    if not root.is_dir():
        raise SourceError(f"WORKER_DATA_BASE {base} is not a directory")
    files: dict[Path, None] = {}
    unmatched: list[str] = []
    for i, pattern in enumerate(patterns):
        matches = _matches(root, pattern, f"paths[{i}]")
        if not matches:
            unmatched.append(pattern)
        for real in matches:
            if real.is_dir():
                for inner in _files_below(root, real):
                    if not inner.name.startswith(".") and is_supported(inner):
                        files[inner.resolve()] = None
            else:
                source_format(real)  # a file named directly must be readable
                files[real] = None
    return list(files), unmatched


def resolve_piece(base: Path, relative: str) -> Path:
    """A planned task's file: ``relative`` to ``base``, confined to it, an existing file."""
    root = base.resolve()
    check_relative_pattern(relative, "piece path")
    real = (root / relative).resolve()
    if not _inside(root, real):
        raise InvalidArgument(f"{root / relative} resolves to {real}, outside WORKER_DATA_BASE {root}")
    if not real.is_file():
        raise SourceError(f"{real}: cannot be read: no such file (it was planned; was it removed?)")
    return real
