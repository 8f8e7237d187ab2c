"""Deleting files through a table's FileIO without failing on what is already gone."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pyiceberg.io import FileIO

log = logging.getLogger(__name__)


def delete_quietly(io: FileIO, paths: Iterable[str]) -> None:
    """Delete each path; a missing file is fine, any other failure is logged and left behind."""
    for path in paths:
        try:
            io.delete(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not delete %s: %s", path, exc)
