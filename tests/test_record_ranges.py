"""workers.record_ranges + read_source(span=...): a file split into spans reads exactly like the whole file.

Every text file here is written record by record, so the byte offset where each record starts is
known independently of the code under test: every planned cut must be one of them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from pyiceberg.io.pyarrow import schema_to_pyarrow

import workers.record_ranges as record_ranges
from app.errors import SourceError
from app.iceberg.schema_evolution import SchemaMode
from tests.support.tables import SCHEMA, rows, write_csv, write_jsonl, write_parquet
from workers.record_ranges import Span, open_bytes, plan_spans
from workers.sources import read_source

# hypothesis keeps caches under ./.hypothesis by default: keep them out of the work tree (as test_fuzz)
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "floe-hypothesis"))

TARGET = schema_to_pyarrow(SCHEMA)
HEADER = ["name", "id", "extra"]  # reordered, an extra column; category/ts/amount absent (null)
TRICKY = ["plain", "comma, inside", 'quoted ""word"" and "x"', '"', '""', "", "line\nbreak", "crlf\r\nbreak"]
TRICKY += ["lone\rcr", "\n", "\r\n\r\n", 'end quote"', '"start quote', "é€😀 multi-byte", "😀" * 20, 'mix,"\n\r\n😀",']


# --- helpers -------------------------------------------------------------------------------------


def csv_file(path: Path, records: list[list[str]], eol: str = "\n", last_eol: bool = True, trailing: str = "") -> set[int]:
    """Write a header and ``records`` (RFC 4180 quoting); the offsets where each data record starts."""
    chunks, starts, offset = [], set(), 0
    for i, record in enumerate([HEADER, *records]):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\r\n").writerow(record)  # "\r\n": a value with a lone \r is quoted
        text = (buf.getvalue()[:-2] + eol).encode()
        if i == len(records) and not last_eol:
            text = text[: -len(eol.encode())]
        if i:
            starts.add(offset)
        chunks.append(text)
        offset += len(text)
    path.write_bytes(b"".join(chunks) + trailing.encode())
    blank_lines = {offset + i + 1 for i, char in enumerate(trailing) if char == "\n"} | {offset}
    return starts | blank_lines if trailing else starts


def tricky_records(count: int) -> list[list[str]]:
    return [[TRICKY[i % len(TRICKY)] + f"#{i}", str(i), TRICKY[(i * 7) % len(TRICKY)]] for i in range(count)]


def jsonl_file(path: Path, records: list[dict[str, Any]], last_eol: bool = True, blank: str = "") -> set[int]:
    """JSON lines (non-ASCII kept as UTF-8), a ``blank`` line after each; where each line starts."""
    chunks, starts, offset = [], set(), 0
    for i, record in enumerate(records):
        text = (json.dumps(record, ensure_ascii=False) + ("\n" if last_eol or i < len(records) - 1 else "")).encode()
        starts |= {offset, offset + len(text)} if blank else {offset}
        chunks.append(text + blank.encode())
        offset += len(text) + len(blank.encode())
    path.write_bytes(b"".join(chunks))
    return starts


def read(path: Path, span: Span | None = None, batch_bytes: int = 1 << 20) -> pa.Table:
    # schema mode ignore: the CSV's "extra" column (tricky quoted values the chunker must not cut) is
    # read past and left out, as the table lacks it
    batches = list(read_source(path, SCHEMA, batch_bytes=batch_bytes, span=span, mode=SchemaMode.IGNORE))
    for batch in batches:
        assert batch.schema.equals(TARGET, check_metadata=True)
        assert batch.num_rows > 0
    return pa.Table.from_batches(batches, schema=TARGET)


def check_cover(spans: list[Span], end: int) -> None:
    assert spans[0].start == 0
    assert spans[-1].end == end
    for a, b in zip(spans[:-1], spans[1:], strict=True):
        assert a.end == b.start
    assert all(s.start < s.end for s in spans)


def split_equals_whole(
    path: Path, fmt: str, target_bytes: int, starts: set[int] | None = None, batch_bytes: int = 1 << 20
) -> list[Span] | None:
    """Plan ``path``; if split, check the cover, the cuts, and that the spans read like the whole file."""
    spans = plan_spans(path, fmt, False, target_bytes)
    if spans is None:
        return None
    end = pq.read_metadata(path).num_row_groups if fmt == "parquet" else path.stat().st_size
    check_cover(spans, end)
    if starts is not None:
        assert {s.start for s in spans[1:]} <= starts
    whole = read(path, batch_bytes=batch_bytes)
    parts = pa.concat_tables([read(path, span, batch_bytes) for span in spans])
    assert parts.equals(whole)
    return spans


# --- CSV -----------------------------------------------------------------------------------------


def test_csv_without_quotes_splits_near_target_after_newlines(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", rows(0, 5000))  # csv.DictWriter: CRLF line ends, no quotes
    data = path.read_bytes()
    assert b'"' not in data
    size = len(data)
    spans = split_equals_whole(path, "csv", size // 6)
    assert spans is not None and len(spans) == 6
    assert all(data[s.start - 2 : s.start] == b"\r\n" for s in spans[1:])
    assert all(abs((s.end - s.start) - size / 6) < 200 for s in spans)
    assert read(path).column("id").to_pylist() == list(range(5000))


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
@pytest.mark.parametrize(("last_eol", "trailing"), [(True, ""), (False, ""), (True, "\n"), (True, "\r\n\r\n")])
def test_csv_quoted_newlines_and_quotes_are_never_cut(tmp_path: Path, eol: str, last_eol: bool, trailing: str) -> None:
    """Every target size from tiny to the whole file: cuts only at record starts, rows read exactly once."""
    records = tricky_records(60)
    path = tmp_path / "a.csv"
    starts = csv_file(path, records, eol, last_eol, trailing)
    size = path.stat().st_size
    expected = read(path)
    assert expected.column("id").to_pylist() == list(range(60))
    assert expected.column("name").to_pylist() == [r[0] for r in records]
    assert expected.column("category").null_count == 60
    split = 0
    for target in range(7, size, 17):
        split += split_equals_whole(path, "csv", target, starts) is not None
    assert split > 20


def test_csv_cut_lands_inside_a_multibyte_character(tmp_path: Path) -> None:
    """Planned offsets that fall inside multi-byte UTF-8 characters move to the next record start."""
    path = tmp_path / "a.csv"
    starts = csv_file(path, [["😀€é" * 40, str(i), "ü" * (i % 50)] for i in range(80)])
    data = path.read_bytes()
    inside = 0
    for parts in range(2, 40):
        ideals = [len(data) * i // parts for i in range(1, parts)]
        inside += sum(0x80 <= data[x] < 0xC0 for x in ideals)  # a UTF-8 continuation byte
        spans = split_equals_whole(path, "csv", len(data) // parts, starts)
        assert spans is not None
    assert inside > 10


def test_csv_header_only_in_the_first_span(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    csv_file(path, [[f"n{i}", str(i), "x"] for i in range(1000)])
    spans = plan_spans(path, "csv", False, 2000)
    assert spans is not None and len(spans) > 3
    ids = [read(path, span).column("id").to_pylist() for span in spans]
    assert ids[0][0] == 0  # the header was skipped, not read as a row
    assert [i for part in ids for i in part] == list(range(1000))


# a quote inside an unquoted field (at its end parity would be wrong from there on), text after a closing one
@pytest.mark.parametrize("line", ['7,5" screen,x', '7,size 5",x', '7,"ab"cd,x', '7,ab"",x'])
def test_csv_ambiguous_quotes_are_not_split_but_read_whole(tmp_path: Path, line: str) -> None:
    path = tmp_path / "a.csv"
    body = "".join(f'{i},"multi\nline {i}",y\n' for i in range(8, 400))
    path.write_text(f"id,name,extra\n1,a,b\n{line}\n{body}", newline="")
    assert plan_spans(path, "csv", False, 256) is None
    expected = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True))
    whole = read(path, batch_bytes=512)  # many blocks
    assert whole.column("name").to_pylist() == expected.column("name").to_pylist()
    assert whole.num_rows == 394


def test_csv_quotes_only_at_edges_are_split(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('id,name\n"1",""\n' + "".join(f'{i},"a ""q"", b"\n' for i in range(2, 300)), newline="")
    assert split_equals_whole(path, "csv", 500) is not None


@pytest.mark.parametrize("block", [2, 256 << 10])
@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_csv_quoted_header_after_a_byte_order_mark(
    tmp_path: Path, bom: str, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record_ranges, "_BLOCK", block)
    path = tmp_path / "a.csv"
    path.write_text(bom + '"id","name"\r\n' + "".join(f'"{i}","n\r\n{i}"\r\n' for i in range(300)), newline="")
    spans = split_equals_whole(path, "csv", 600)
    assert spans is not None and len(spans) > 3
    assert read(path).column("name").to_pylist() == [f"n\r\n{i}" for i in range(300)]


def test_csv_without_any_newline_after_the_header_is_not_split(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('id,name\n1,"' + "x\n" * 500 + '"')
    assert plan_spans(path, "csv", False, 100) is None
    assert read(path).column("name").to_pylist() == ["x\n" * 500]


def test_csv_quoted_newlines_beyond_one_read_block(tmp_path: Path) -> None:
    """Quoted newlines straddling read blocks read correctly (pyarrow's plain chunker loses sync)."""
    path = tmp_path / "a.csv"
    records = [[f"row {i}\nsecond line\r\nthird, with \"quotes\"\n" * (1 + i % 5), str(i), ""] for i in range(3000)]
    csv_file(path, records)
    assert path.stat().st_size > 20 * (16 << 10)
    with pytest.raises(pa.ArrowInvalid):  # "CSV parser got out of sync with chunker" or the like
        pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=16 << 10)).read_all()
    whole = read(path, batch_bytes=16 << 10)
    assert whole.column("name").to_pylist() == [r[0] for r in records]
    assert whole.column("id").to_pylist() == list(range(3000))
    spans = split_equals_whole(path, "csv", 100 << 10, batch_bytes=16 << 10)
    assert spans is not None and len(spans) > 3


@pytest.mark.parametrize("gz", [False, True])
def test_csv_quoted_crlf_across_read_blocks_is_kept(tmp_path: Path, gz: bool) -> None:
    """Every read-block size: a block ending between a quoted CR and LF keeps both (apache/arrow#51368)."""
    text = 'id,name\r\n1,"x\r\ny"\r\n2,"p\r\r\nq\r"\r\n3,"\r\n\r\n"\r\n4,"\r"\r\n'
    path = tmp_path / ("a.csv.gz" if gz else "a.csv")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    for batch_bytes in range(12, len(text) + 2):
        names = read(path, batch_bytes=batch_bytes).column("name").to_pylist()
        assert names == ["x\r\ny", "p\r\r\nq\r", "\r\n\r\n", "\r"], batch_bytes


def test_open_bytes_pieces_never_end_on_cr_and_stop_at_the_span_end(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    data = b"\r\r\r\nx\r\ny\r\r\rz\r\n\r"
    path.write_bytes(data)
    for start in range(len(data)):
        for end in range(start + 1, len(data) + 1):
            for size in (1, 3, 100):
                with open_bytes(path, False, Span(start, end)) as stream:
                    pieces = list(iter(lambda: bytes(stream.read(size)), b""))  # noqa: B023
                assert b"".join(pieces) == data[start:end]
                assert not any(piece.endswith(b"\r") for piece in pieces[:-1])


@pytest.mark.parametrize("block", [1, 2, 3, 5, 64])
def test_csv_quote_scan_across_blocks(tmp_path: Path, block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny scan blocks: quote parity, edge checks and cut searches carry across block boundaries."""
    monkeypatch.setattr(record_ranges, "_BLOCK", block)
    monkeypatch.setattr(record_ranges, "_WINDOW", max(1, block // 2))
    path = tmp_path / "a.csv"
    starts = csv_file(path, tricky_records(40), "\r\n")
    for target in (10, 37, 101, 400):
        assert split_equals_whole(path, "csv", target, starts) is not None
    path.write_text('id,name\n1,"x\n' + "\n".join(f"{i},ok" for i in range(2, 99)) + '\n99,5" screen\n', newline="")
    assert plan_spans(path, "csv", False, 64) is None


# --- JSON lines ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("last_eol", "blank"), [(True, ""), (False, ""), (True, "\n"), (True, "\r\n")])
def test_jsonl_splits_after_any_newline(tmp_path: Path, last_eol: bool, blank: str) -> None:
    records = [{"id": i, "name": TRICKY[i % len(TRICKY)], "amount": i / 4} for i in range(80)]
    path = tmp_path / "a.jsonl"
    starts = jsonl_file(path, records, last_eol, blank)
    expected = read(path)
    assert expected.column("name").to_pylist() == [r["name"] for r in records]
    split = 0
    for target in range(11, path.stat().st_size, 29):
        split += split_equals_whole(path, "jsonl", target, starts) is not None
    assert split > 20


def test_jsonl_with_helper_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", rows(0, 3000))
    spans = split_equals_whole(path, "jsonl", path.stat().st_size // 5)
    assert spans is not None and len(spans) == 5


# --- parquet -------------------------------------------------------------------------------------


def test_parquet_spans_are_runs_of_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(rows(0, 20_000)), path, row_group_size=1000)
    meta = pq.read_metadata(path)
    assert meta.num_row_groups == 20
    spans = split_equals_whole(path, "parquet", path.stat().st_size // 4)
    assert spans is not None and len(spans) == 4
    assert [s.end - s.start for s in spans] == [5, 5, 5, 5]
    spans = split_equals_whole(path, "parquet", 1)  # as many spans as row groups, no more
    assert spans == [Span(i, i + 1) for i in range(20)]
    assert read(path, Span(3, 5)).column("id").to_pylist() == list(range(3000, 5000))


def test_parquet_with_one_row_group_is_not_split(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "a.parquet", rows(0, 5000))
    assert pq.read_metadata(path).num_row_groups == 1
    assert plan_spans(path, "parquet", False, 100) is None


# --- not split, bad spans ------------------------------------------------------------------------


def test_gzip_and_small_files_are_read_whole(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", rows(0, 1000))
    size = path.stat().st_size
    gz = tmp_path / "a.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert plan_spans(gz, "csv", True, 100) is None
    smallest_whole = -(-size * 2 // 3)  # ceil(size / 1.5): a file up to 1.5x the target is read whole
    assert plan_spans(path, "csv", False, smallest_whole) is None
    assert plan_spans(path, "csv", False, smallest_whole - 1) is not None
    with pytest.raises(ValueError, match="gzip"):
        read_source(gz, SCHEMA, span=Span(0, 10))


def test_bad_arguments_and_spans(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", rows(0, 10))
    with pytest.raises(ValueError):
        plan_spans(path, "tsv", False, 100)
    with pytest.raises(ValueError):
        plan_spans(path, "csv", False, 0)
    with pytest.raises(SourceError, match="cannot be read"):
        plan_spans(tmp_path / "nope.csv", "csv", False, 100)
    for bad in (Span(5, 5), Span(-1, 3)):
        with pytest.raises(ValueError):
            read_source(path, SCHEMA, span=bad)
    size = path.stat().st_size
    with pytest.raises(SourceError, match="beyond the end of the file"):
        list(read_source(path, SCHEMA, span=Span(0, size + 1)))
    pq_path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(rows(0, 100)), pq_path, row_group_size=50)
    with pytest.raises(SourceError, match=r"beyond the end of the file \(2 row groups\)"):
        list(read_source(pq_path, SCHEMA, span=Span(1, 3)))


# --- properties ----------------------------------------------------------------------------------

TOKENS = ["a", "b", "z", "0", " ", ",", '"', '""', "\n", "\r\n", "\r", "é", "€", "😀"]
TEXT = st.lists(st.sampled_from(TOKENS), max_size=12).map("".join)
PROPERTY = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(
    names=st.lists(TEXT, min_size=1, max_size=40),
    eol=st.sampled_from(["\n", "\r\n"]),
    last_eol=st.booleans(),
    target=st.integers(1, 400),
    block=st.sampled_from([1, 3, 16, 256 << 10]),
)
def test_property_csv_spans_read_like_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str], eol: str, last_eol: bool, target: int, block: int
) -> None:
    monkeypatch.setattr(record_ranges, "_BLOCK", block)
    path = tmp_path / "p.csv"
    starts = csv_file(path, [[name, str(i), name[::-1]] for i, name in enumerate(names)], eol, last_eol)
    assert read(path, batch_bytes=256).column("name").to_pylist() == names  # a row may straddle blocks
    spans = split_equals_whole(path, "csv", target, starts, batch_bytes=256)
    size = path.stat().st_size
    if spans is None and size > 1.5 * target:  # only when no record starts at or after the first ideal cut
        assert max(starts) < size // round(size / target)


@PROPERTY
@given(
    names=st.lists(TEXT, min_size=1, max_size=40),
    last_eol=st.booleans(),
    blank=st.sampled_from(["", "\n", "\r\n"]),
    target=st.integers(1, 400),
)
def test_property_jsonl_spans_read_like_the_whole_file(
    tmp_path: Path, names: list[str], last_eol: bool, blank: str, target: int
) -> None:
    path = tmp_path / "p.jsonl"
    starts = jsonl_file(path, [{"id": i, "name": n} for i, n in enumerate(names)], last_eol, blank)
    assert read(path).column("name").to_pylist() == names
    split_equals_whole(path, "jsonl", target, starts)


PLAIN = st.lists(st.sampled_from(["a", " ", "😀"]), max_size=4).map("".join)
QUOTED = st.lists(st.sampled_from(["a", ",", '""', "\n", "\r\n", "😀"]), max_size=5).map(lambda t: f'"{"".join(t)}"')
STRAY = st.one_of(  # a quote inside an unquoted field, or text after a closing quote
    st.tuples(PLAIN, st.sampled_from(['"', '""']), PLAIN).map("".join), st.tuples(QUOTED, PLAIN).map("".join)
)


@st.composite
def raw_fields(draw: st.DrawFn) -> list[str]:
    """Two fields a row, well-formed; half the time one of them somewhere is a stray quote."""
    clean = st.one_of(PLAIN, QUOTED)
    fields = [field for row in draw(st.lists(st.tuples(clean, clean), min_size=1, max_size=30)) for field in row]
    if draw(st.booleans()):
        fields[draw(st.integers(0, len(fields) - 1))] = draw(STRAY)
    return fields


@PROPERTY
@given(fields=raw_fields(), target=st.integers(1, 80))
def test_property_csv_with_quotes_anywhere(tmp_path: Path, fields: list[str], target: int) -> None:
    """Quotes written raw, not RFC-quoted: whenever the file reads at all and is split, spans read like it."""
    path = tmp_path / "raw.csv"
    lines = [f"{i // 2},{fields[i]},{fields[i + 1]}\n" for i in range(0, len(fields), 2)]
    path.write_bytes(("id,name,category\n" + "".join(lines)).encode())
    spans = plan_spans(path, "csv", False, target)
    try:
        whole = read(path)
    except SourceError:
        event("unreadable")  # unbalanced quotes, a bare newline splitting a row, ...
        return
    event("read whole" if spans is None else "split")  # --hypothesis-show-statistics
    if spans is not None:
        check_cover(spans, path.stat().st_size)
        assert pa.concat_tables([read(path, span) for span in spans]).equals(whole)
