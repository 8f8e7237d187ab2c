"""The source-format registry: which files Floe reads, decided from the name once per source.

Parquet (``.parquet``, ``.pq``), CSV (``.csv``) and JSON lines (``.jsonl``, ``.ndjson``, ``.json``);
CSV and JSON lines may be gzip-compressed (``.gz`` after the suffix). Suffixes are case-insensitive.
The readers (``workers/sources.py``) and ``floe table create --from-sample`` both ask this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from app.errors import SourceError

_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_GZ_SUFFIXES = tuple(f"{s}.gz" for s, fmt in _SUFFIXES.items() if fmt != "parquet")
SUPPORTED_SUFFIXES: tuple[str, ...] = (*_SUFFIXES, *_GZ_SUFFIXES)
SUPPORTED_TEXT = f"{', '.join(_SUFFIXES)}, and {'/'.join(_GZ_SUFFIXES)}"


@dataclass(frozen=True)
class SourceFormat:
    name: str  # "parquet", "csv" or "jsonl"
    gzip: bool = False


def source_format(path: PurePath) -> SourceFormat:
    """The format of ``path`` by its suffixes; :class:`SourceError` naming the file for anything else."""
    suffixes = [s.lower() for s in path.suffixes]
    gz = suffixes[-1:] == [".gz"]
    if gz:
        suffixes.pop()
    name = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    if name is None or (gz and name == "parquet"):
        raise SourceError(f"{path}: unsupported source format (supported: {SUPPORTED_TEXT})")
    return SourceFormat(name, gz)


def is_supported(path: PurePath) -> bool:
    try:
        source_format(path)
    except SourceError:
        return False
    return True
