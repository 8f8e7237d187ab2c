"""workers.paths.resolve_sources: a task's sources stay below the host's WORKER_DATA_BASE."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from app.errors import InvalidArgument, SourceError
from workers.conversion import expand_sources
from workers.paths import resolve_sources


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """WORKER_DATA_BASE with a few files; ``tmp_path / 'outside'`` holds a file it must never reach."""
    root = tmp_path / "base"
    root.mkdir()
    (root / "a.csv").write_text("id\n1\n")
    (root / "b.csv").write_text("id\n2\n")
    (root / "c.jsonl").write_text('{"id": 3}\n')
    (root / "sub").mkdir()
    (root / "sub" / "d.csv").write_text("id\n4\n")
    (root / "sub" / "deeper").mkdir()
    (root / "sub" / "deeper" / "e.csv").write_text("id\n5\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("id\n666\n")
    return root


@pytest.fixture
def outside(base: Path) -> Path:
    return base.parent / "outside"


# --- what is allowed ------------------------------------------------------------------------------


def test_glob_is_relative_to_base_and_sorted(base: Path) -> None:
    assert resolve_sources(base, "t1", ["*.csv"]) == [base / "a.csv", base / "b.csv"]


def test_several_patterns_keep_their_order(base: Path) -> None:
    found = resolve_sources(base, "t1", ("c.jsonl", "*.csv", "sub/d.csv"))
    assert found == [base / "c.jsonl", base / "a.csv", base / "b.csv", base / "sub" / "d.csv"]


def test_recursive_glob(base: Path) -> None:
    found = resolve_sources(base, "t1", ["sub/**/*.csv"])
    assert found == [base / "sub" / "d.csv", base / "sub" / "deeper" / "e.csv"]


def test_question_mark_and_bracket_globs(base: Path) -> None:
    assert resolve_sources(base, "t1", ["?.csv"]) == [base / "a.csv", base / "b.csv"]
    assert resolve_sources(base, "t1", ["[b].csv"]) == [base / "b.csv"]


def test_directory_pattern_returns_the_directory_and_ingest_expands_it(base: Path) -> None:
    found = resolve_sources(base, "t1", ["sub"])
    assert found == [base / "sub"]
    assert [part.path for part in expand_sources(found)] == [base / "sub" / "d.csv", base / "sub" / "deeper" / "e.csv"]


def test_no_patterns_means_the_task_directory(base: Path) -> None:
    task_dir = base / "task-7"
    task_dir.mkdir()
    (task_dir / "part.csv").write_text("id\n1\n")
    assert resolve_sources(base, "task-7", ()) == [task_dir]
    assert resolve_sources(base, "task-7", []) == [task_dir]
    assert [part.path for part in expand_sources([task_dir])] == [task_dir / "part.csv"]


def test_relative_base_is_resolved(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(base.parent)
    assert resolve_sources(Path("base"), "t1", ["a.csv"]) == [base / "a.csv"]


def test_symlinks_that_stay_inside_base_are_allowed(base: Path) -> None:
    os.symlink(base / "a.csv", base / "link.csv")
    os.symlink(base / "sub", base / "linkdir")
    os.symlink("../a.csv", base / "sub" / "relative-link.csv")  # relative, still inside
    assert resolve_sources(base, "t1", ["link.csv"]) == [base / "a.csv"]
    assert resolve_sources(base, "t1", ["linkdir"]) == [base / "sub"]
    assert resolve_sources(base, "t1", ["sub/relative-link.csv"]) == [base / "a.csv"]
    # a directory holding an inside symlink is fine too
    assert resolve_sources(base, "t1", ["sub"]) == [base / "sub"]


def test_base_that_is_itself_a_symlink(base: Path, tmp_path: Path) -> None:
    link = tmp_path / "base-link"
    os.symlink(base, link)
    assert resolve_sources(link, "t1", ["a.csv"]) == [base / "a.csv"]


# --- refused: bad patterns (InvalidArgument, not SourceError) -------------------------------------


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("/etc/passwd", "paths[0]='/etc/passwd' must be relative to the host's WORKER_DATA_BASE"),
        ("/tmp/*.csv", "paths[0]='/tmp/*.csv' must be relative to the host's WORKER_DATA_BASE"),
        ("~/x.csv", "paths[0]='~/x.csv' must be relative to the host's WORKER_DATA_BASE"),
        ("../outside/secret.csv", "paths[0]='../outside/secret.csv' must not contain '..'"),
        ("sub/../../outside/*.csv", "paths[0]='sub/../../outside/*.csv' must not contain '..'"),
        ("..", "paths[0]='..' must not contain '..'"),
    ],
)
def test_absolute_and_dotdot_patterns_are_invalid_arguments(base: Path, pattern: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)) as info:
        resolve_sources(base, "t1", [pattern])
    assert type(info.value) is InvalidArgument  # a caller mistake, not an unreadable source


def test_the_failing_pattern_is_named_by_index(base: Path) -> None:
    with pytest.raises(InvalidArgument, match=re.escape("paths[1]='/abs' must be relative")):
        resolve_sources(base, "t1", ["a.csv", "/abs"])


def test_empty_pattern_is_refused(base: Path) -> None:
    with pytest.raises(InvalidArgument, match=re.escape("paths[0] is empty")):
        resolve_sources(base, "t1", [""])


# --- refused: symlinks leading outside ------------------------------------------------------------


def test_file_symlink_pointing_outside_is_refused(base: Path, outside: Path) -> None:
    os.symlink(outside / "secret.csv", base / "evil.csv")
    expected = f"{base / 'evil.csv'} resolves to {outside / 'secret.csv'}, outside WORKER_DATA_BASE {base}"
    with pytest.raises(InvalidArgument, match=re.escape(expected)) as info:
        resolve_sources(base, "t1", ["evil.csv"])
    assert type(info.value) is InvalidArgument


def test_glob_that_matches_an_outside_symlink_is_refused_whole(base: Path, outside: Path) -> None:
    os.symlink(outside / "secret.csv", base / "evil.csv")
    with pytest.raises(InvalidArgument, match=re.escape(f"{base / 'evil.csv'} resolves to")):
        resolve_sources(base, "t1", ["*.csv"])


def test_directory_symlink_pointing_outside_is_refused(base: Path, outside: Path) -> None:
    os.symlink(outside, base / "evildir")
    expected = f"{base / 'evildir'} resolves to {outside}, outside WORKER_DATA_BASE {base}"
    with pytest.raises(InvalidArgument, match=re.escape(expected)):
        resolve_sources(base, "t1", ["evildir"])


def test_glob_through_an_outside_directory_symlink_is_refused(base: Path, outside: Path) -> None:
    os.symlink(outside, base / "evildir")
    expected = (
        f"{base / 'evildir' / 'secret.csv'} resolves to {outside / 'secret.csv'}, "
        f"outside WORKER_DATA_BASE {base}"
    )
    with pytest.raises(InvalidArgument, match=re.escape(expected)):
        resolve_sources(base, "t1", ["evildir/*.csv"])
    with pytest.raises(InvalidArgument, match="outside WORKER_DATA_BASE"):
        resolve_sources(base, "t1", ["*/secret.csv"])


def test_file_symlink_nested_in_a_matched_directory_is_refused(base: Path, outside: Path) -> None:
    os.symlink(outside / "secret.csv", base / "sub" / "deeper" / "nested.csv")
    nested = base / "sub" / "deeper" / "nested.csv"
    expected = f"{nested} resolves to {outside / 'secret.csv'}, outside WORKER_DATA_BASE {base}"
    with pytest.raises(InvalidArgument, match=re.escape(expected)):
        resolve_sources(base, "t1", ["sub"])
    # ... also when the directory is the task's default directory
    (base / "t2").mkdir()
    os.symlink(outside / "secret.csv", base / "t2" / "x.csv")
    with pytest.raises(InvalidArgument, match="outside WORKER_DATA_BASE"):
        resolve_sources(base, "t2", ())


def test_directory_symlink_nested_in_a_matched_directory_leaks_nothing(base: Path, outside: Path) -> None:
    # A nested directory symlink is not followed by the recursive walk, so nothing outside is read.
    os.symlink(outside, base / "sub" / "inner")
    try:
        found = resolve_sources(base, "t1", ["sub"])
    except InvalidArgument as exc:  # refusing it outright is fine too
        assert "outside WORKER_DATA_BASE" in str(exc)
        return
    files = [part.path for part in expand_sources(found)]
    assert files and all(f.resolve().is_relative_to(base) for f in files), files
    assert outside / "secret.csv" not in [f.resolve() for f in files]


def test_task_directory_symlink_pointing_outside_is_refused(base: Path, outside: Path) -> None:
    os.symlink(outside, base / "t1")
    expected = f"task directory {base / 't1'} leaves WORKER_DATA_BASE {base}"
    with pytest.raises(InvalidArgument, match=re.escape(expected)):
        resolve_sources(base, "t1", ())


def test_task_id_that_climbs_out_is_refused(base: Path) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(f"leaves WORKER_DATA_BASE {base}")):
        resolve_sources(base, "..", ())


# --- refused: nothing to read (SourceError) -------------------------------------------------------


def test_glob_that_matches_nothing_is_a_source_error(base: Path) -> None:
    expected = f"{base / 'nothing-*.csv'}: no file matches (paths are relative to WORKER_DATA_BASE {base})"
    with pytest.raises(SourceError, match=re.escape(expected)):
        resolve_sources(base, "t1", ["nothing-*.csv"])


def test_missing_plain_path_is_a_source_error(base: Path) -> None:
    with pytest.raises(SourceError, match=re.escape(f"{base / 'missing.csv'}: no file matches")):
        resolve_sources(base, "t1", ["missing.csv"])


def test_one_empty_pattern_among_good_ones_fails_the_task(base: Path) -> None:
    with pytest.raises(SourceError, match=re.escape(f"{base / '*.parquet'}: no file matches")):
        resolve_sources(base, "t1", ["*.csv", "*.parquet"])


def test_missing_task_directory_is_a_source_error(base: Path) -> None:
    expected = f"task t9 names no paths and {base / 't9'} does not exist"
    with pytest.raises(SourceError, match=re.escape(expected)):
        resolve_sources(base, "t9", ())


def test_task_directory_that_is_a_file_is_a_source_error(base: Path) -> None:
    (base / "t3").write_text("not a directory")
    with pytest.raises(
        SourceError, match=re.escape(f"task t3 names no paths and {base / 't3'} does not exist")
    ):
        resolve_sources(base, "t3", ())


def test_base_that_is_a_file_is_a_source_error(base: Path) -> None:
    with pytest.raises(SourceError, match=re.escape(f"WORKER_DATA_BASE {base / 'a.csv'} is not a directory")):
        resolve_sources(base / "a.csv", "t1", ["*.csv"])


def test_base_that_does_not_exist_is_a_source_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SourceError, match=re.escape(f"WORKER_DATA_BASE {missing} is not a directory")):
        resolve_sources(missing, "t1", ())


def test_error_classes_map_to_grpc_codes() -> None:
    # both are InvalidArgument to gRPC, but only SourceError means "the sources are the problem"
    assert issubclass(SourceError, InvalidArgument)
    assert SourceError("x").grpc_code == InvalidArgument("x").grpc_code == "INVALID_ARGUMENT"
    assert not SourceError("x").retryable
