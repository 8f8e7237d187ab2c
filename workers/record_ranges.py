"""Split one big source file into spans of whole records that separate processes convert in parallel.

A :class:`Span` is a byte range ``[start, end)`` of a CSV or JSON lines file, or a range of row-group
indexes of a parquet file. :func:`plan_spans` cuts a file into spans of about ``target_bytes`` that
cover it exactly; ``workers.sources.read_source(path, schema, span=...)`` reads one of them.

Where text files are cut:
- JSON lines: right after any ``\\n`` (a raw newline cannot occur inside a JSON value);
- CSV (RFC 4180: ``,`` delimiter, ``"`` quotes, ``""`` an escaped quote): right after a ``\\n`` that
  is not inside a quoted value. Without any ``"`` in the file every ``\\n`` ends a record. Otherwise
  a ``\\n`` ends a record iff the number of ``"`` before it is even, which holds only while quotes sit
  at field edges. So every quote is checked against the quote parity before it: a quote that opens
  (even count before it) must follow a delimiter, a line end, another quote or the start of the file;
  a quote that closes (odd count before it) must precede a delimiter, a line end, another quote or
  the end of the file. If one does not (``5" screen``, ``size 5",``, ``"ab"cd``) the quoting is
  ambiguous and the file is not split. The header line belongs to the first span.

The file is scanned with block reads (bounded memory; no memory map, whose pages would count as the
process's resident memory and which a file truncated meanwhile would turn into a crash): memchr-fast
for a file without quotes, numpy-vectorised for one with quotes (whose blocks' edge checks run on
several threads: the parity before each block comes from counting, which is cheap).

:func:`open_bytes` opens a file or a span as a bounded stream for pyarrow's readers, working around
a pyarrow bug that corrupts quoted CRLFs.
"""

from __future__ import annotations

import bisect
import io
import os
import pathlib
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from app.errors import SourceError

FORMATS = ("csv", "jsonl", "parquet")
SLACK = 1.5  # a file up to SLACK * target_bytes is read whole
_BLOCK = 256 << 10  # bytes per read and numpy step: cache-sized (measured fastest); bounds memory
_WINDOW = 64 << 10  # bytes searched at once for a record-ending newline
_SCAN_THREADS = 4  # at most: the edge checks of a quoted CSV's blocks run on the host's cores
_NO_QUOTES = np.empty(0, dtype=np.int64)
_QUOTE, _NEWLINE = ord('"'), ord("\n")
_EDGE = np.zeros(256, dtype=bool)  # bytes that may sit next to a quote at a field edge
_EDGE[[ord(","), ord("\n"), ord("\r"), _QUOTE]] = True


@dataclass(frozen=True)
class Span:
    """A part of a source file: bytes ``[start, end)`` (CSV, JSON lines) or row groups (parquet)."""

    start: int  # CSV / JSON lines: byte offset; parquet: first row-group index
    end: int  # exclusive: byte offset / row-group index


def plan_spans(path: pathlib.Path, fmt: str, gz: bool, target_bytes: int) -> list[Span] | None:
    """Spans of about ``target_bytes`` covering ``path`` exactly, or None to read the file whole.

    None for gzip files, files up to ``SLACK * target_bytes``, a parquet file with one row group, a
    CSV whose quoting is ambiguous (see the module docstring), and a file with no place to cut.
    Spans are contiguous and non-empty; the first starts at 0, the last ends at the file size
    (parquet: the number of row groups). :class:`SourceError` if the file cannot be read.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if target_bytes <= 0:
        raise ValueError(f"target_bytes must be positive, got {target_bytes}")
    if gz:
        return None
    try:
        size = path.stat().st_size
        if size <= SLACK * target_bytes:
            return None
        if fmt == "parquet":
            return _parquet_spans(path, target_bytes)
        parts = round(size / target_bytes)
        ideals = [size * i // parts for i in range(1, parts)]
        with path.open("rb", buffering=0) as f:
            if fmt == "jsonl" or not _contains(f, size, b'"'):
                cuts: list[int] | None = _newline_cuts(f, size, ideals)
            else:
                cuts = _csv_cuts(f, size, ideals)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{path}: cannot be read: {exc}") from exc
    return _spans(cuts, size)


def _spans(cuts: list[int] | None, end: int) -> list[Span] | None:
    if not cuts:
        return None
    edges = [0, *cuts, end]
    return [Span(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _read_at(f: io.FileIO, offset: int, into: memoryview) -> int:
    """Fill ``into`` from ``offset`` on; the number of bytes read (fewer only at the end of the file)."""
    f.seek(offset)
    got = 0
    while got < len(into):
        n = f.readinto(into[got:])
        if not n:
            break
        got += n
    return got


def _contains(f: io.FileIO, size: int, needle: bytes) -> bool:
    buf = bytearray(_BLOCK)
    for offset in range(0, size, _BLOCK):
        n = _read_at(f, offset, memoryview(buf))
        if buf.find(needle, 0, n) >= 0:
            return True
    return False


def _newline_cuts(f: io.FileIO, size: int, ideals: list[int]) -> list[int]:
    """For each ideal offset, the first offset at or after it that follows a ``\\n``."""
    buf = bytearray(_WINDOW)
    cuts: list[int] = []
    for ideal in ideals:
        pos, cut = max(ideal, cuts[-1] + 1 if cuts else 1) - 1, size
        while pos < size:
            n = _read_at(f, pos, memoryview(buf))
            newline = buf.find(b"\n", 0, n)
            if newline >= 0 or not n:
                cut = pos + newline + 1 if newline >= 0 else size
                break
            pos += n
        if cut >= size:
            break
        cuts.append(cut)
    return cuts


def _csv_cuts(f: io.FileIO, size: int, ideals: list[int]) -> list[int] | None:
    """Record starts at or after each ideal offset; None if the quoting is ambiguous.

    This thread reads the blocks in order, counts their quotes (the parity before each block) and
    places the cuts; the edge check of each block's quotes, the costly part, runs on a pool of
    threads (numpy releases the interpreter) given the parity before that block.
    """
    fd = f.fileno()
    buf = bytearray(_BLOCK + 2)
    cuts: list[int] = []
    pending = iter(ideals)
    want = next(pending, None)  # the next cut must be at or after this offset
    quotes_before = 0  # number of quotes before this block
    _read_at(f, 0, memoryview(buf)[:3])
    head = 3 if buf.startswith(b"\xef\xbb\xbf") else 0  # the first field starts after a byte order mark
    pool = ThreadPoolExecutor(max(1, min(_SCAN_THREADS, os.cpu_count() or 1)), thread_name_prefix="floe-scan")
    checks: deque[Future[bool]] = deque()
    try:
        for start in range(0, size, _BLOCK):
            stop = min(size, start + _BLOCK)
            lo, hi = max(start - 1, 0), min(stop + 1, size)  # and a byte either side: neighbours of quotes
            if _read_at(f, lo, memoryview(buf)[: hi - lo]) < hi - lo:
                raise OSError("the file shrank while it was being planned")
            data = np.frombuffer(buf, dtype=np.uint8, count=hi - lo)  # offset lo in the file
            begin, end = start - lo, stop - lo
            count, quotes = 0, _NO_QUOTES
            if buf.find(b'"', begin, end) >= 0:
                checks.append(pool.submit(_block_ok, fd, start, size, head, quotes_before))
                count = int(np.count_nonzero(data[begin:end] == _QUOTE))
            while want is not None and want - 1 < stop:
                if count and not len(quotes):
                    quotes = np.flatnonzero(data[begin:end] == _QUOTE) + begin
                cut = _record_start(data, quotes, quotes_before, max(want - 1, start) - lo, end)
                if cut is None:
                    break  # no record boundary in the rest of this block: keep looking in the next
                if cut + lo >= size:
                    want = None
                    break
                cuts.append(cut + lo)
                want = next(pending, None)
                if want is not None:
                    want = max(want, cut + lo + 1)
            quotes_before += count
            while checks and checks[0].done():  # fail fast on an ambiguous block
                if not checks.popleft().result():
                    return None
            if want is None:
                break  # every cut is placed: the parity behind them is all that decides them
        return cuts if all(check.result() for check in checks) else None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _block_ok(fd: int, start: int, size: int, head: int, quotes_before: int) -> bool:
    """Whether the quotes of the block at ``start`` sit at field edges, given the quotes before it.

    The block is read again here (from the page cache) rather than handed over as a copy: measured
    faster (fresh 256 KiB buffers in the reading thread cost more), and nothing queued holds data."""
    stop = min(size, start + _BLOCK)
    lo, hi = max(start - 1, 0), min(stop + 1, size)
    raw = os.pread(fd, hi - lo, lo)
    if len(raw) < hi - lo:
        raise OSError("the file shrank while it was being planned")
    data = np.frombuffer(raw, dtype=np.uint8)
    quotes = np.flatnonzero(data[start - lo : stop - lo] == _QUOTE) + (start - lo)
    first = head - lo if start <= head < stop else -1  # the first field's index in data, if there
    return _quotes_at_edges(data, quotes, quotes_before, first)


def _quotes_at_edges(
    data: npt.NDArray[np.uint8], quotes: npt.NDArray[np.int64], quotes_before: int, first_field: int
) -> bool:
    """Whether every quote at ``quotes`` (sorted indexes into ``data``) sits where the parity rule holds.

    ``data`` holds a byte either side of the quotes' block, except at the start and the end of the
    file; ``first_field`` is the index where the file's first field starts (-1: not in ``data``).
    """
    first = quotes_before % 2  # the index in ``quotes`` of the first quote that opens
    opening, closing = quotes[first::2], quotes[1 - first :: 2]
    if len(opening) and opening[0] == first_field:
        opening = opening[1:]
    if len(closing) and closing[-1] == len(data) - 1:
        closing = closing[:-1]
    return bool(_EDGE[data[opening - 1]].all() and _EDGE[data[closing + 1]].all())


def _record_start(
    data: npt.NDArray[np.uint8], quotes: npt.NDArray[np.int64], quotes_before: int, lo: int, stop: int
) -> int | None:
    """The index after the first ``\\n`` in ``data[lo:stop]`` outside quotes (``quotes``: this block's)."""
    while lo < stop:
        hi = min(stop, lo + _WINDOW)
        newlines = np.flatnonzero(data[lo:hi] == _NEWLINE) + lo
        if len(newlines):
            parity = (np.searchsorted(quotes, newlines) + quotes_before) % 2
            outside = newlines[parity == 0]
            if len(outside):
                return int(outside[0]) + 1
        lo = hi
    return None


def _parquet_spans(path: pathlib.Path, target_bytes: int) -> list[Span] | None:
    """Runs of row groups whose compressed sizes add up to about ``target_bytes`` each."""
    with pq.ParquetFile(str(path)) as pf:
        meta = pf.metadata
    groups = meta.num_row_groups
    if groups < 2:
        return None
    cumulative = [0]
    for i in range(groups):
        group = meta.row_group(i)
        cumulative.append(cumulative[-1] + sum(group.column(c).total_compressed_size for c in range(group.num_columns)))
    total = cumulative[-1]
    parts = min(groups, round(total / target_bytes))
    cuts: list[int] = []
    for i in range(1, parts):
        ideal = total * i / parts
        j = bisect.bisect_left(cumulative, ideal, 1, groups)  # cumulative[j-1] < ideal <= cumulative[j]
        if j > 1 and ideal - cumulative[j - 1] < cumulative[j] - ideal:
            j -= 1
        j = max(j, cuts[-1] + 1 if cuts else 1)
        if j >= groups:
            break
        cuts.append(j)
    return _spans(cuts, groups)


# --- opening a file or a span for pyarrow's readers ----------------------------------------------


class _Pieces(io.RawIOBase):
    """``source`` (at most ``limit`` bytes of it) for pyarrow's readers, never ending a piece on ``\\r``.

    The hold-back works around apache/arrow#51368 (pyarrow 21): when one input buffer ends with
    ``\\r`` and the next starts with ``\\n``, the CSV reader drops that ``\\n`` even inside a quoted
    value, silently turning a quoted CRLF into a lone CR. Only the last piece may end with ``\\r``.
    """

    def __init__(self, source: pa.NativeFile, limit: int = sys.maxsize) -> None:
        super().__init__()
        self._source = source
        self._left = limit
        self._carry = b""  # trailing CRs held back from the previous piece

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> pa.Buffer:  # type: ignore[override]
        asked = sys.maxsize if size is None or size < 0 else max(size, 1)
        while True:
            want = min(asked, self._left)
            raw = self._source.read_buffer(want) if want < sys.maxsize else self._source.read_buffer()
            self._left -= raw.size
            piece = pa.py_buffer(self._carry + raw.to_pybytes()) if self._carry else raw
            self._carry = b""
            view = memoryview(piece)
            keep = len(view)
            while keep and view[keep - 1] == 13:
                keep -= 1
            if raw.size == 0 or keep == len(view):
                return piece
            self._carry = bytes(view[keep:])
            if keep:
                return piece.slice(0, keep)
            # nothing but CRs so far: read on

    def close(self) -> None:
        self._source.close()
        super().close()


def check_span(path: pathlib.Path, span: Span, end: int, unit: str) -> None:
    """:class:`SourceError` if ``span`` reaches past ``end`` (the file changed since it was planned?)."""
    if span.end > end:
        raise SourceError(f"{path}: span [{span.start}, {span.end}) is beyond the end of the file ({end} {unit})")


def open_bytes(
    path: pathlib.Path, gz: bool, span: Span | None = None, guard_cr: bool = False
) -> pa.NativeFile | io.RawIOBase:
    """A stream of the file (gunzipped if ``gz``) or of its byte ``span``, for pyarrow's readers.

    A span, and the whole file with ``guard_cr``, come through a stream that never hands over a
    piece ending in ``\\r`` (needed for CSV with quoted values; see :class:`_Pieces`).
    """
    if span is not None and gz:
        raise ValueError(f"{path}: a gzip file can only be read whole, not by span")
    stream = pa.input_stream(str(path), compression="gzip" if gz else None)
    if span is None:
        return _Pieces(stream) if guard_cr else stream
    try:
        check_span(path, span, stream.size(), "bytes")
        stream.seek(span.start)
    except BaseException:
        stream.close()
        raise
    return _Pieces(stream, span.end - span.start)
