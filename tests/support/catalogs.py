"""Catalog handles for the tests, and the PostgreSQL availability check (required under CI)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from pyiceberg.catalog import Catalog

PG_URI = os.environ.get("FLOE_TEST_PG_URI", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@dataclass
class CatalogHandle:
    catalog: Catalog
    properties: dict[str, str]
    namespace: str

    def identifier(self, name: str) -> str:
        return f"{self.namespace}.{name}"


def postgres_unavailable() -> str | None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG_URI)
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return str(exc).splitlines()[0]


def require_or_skip(reason: str | None, what: str) -> None:
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required under CI but unavailable: {reason}")
    pytest.skip(f"{what} unavailable: {reason}")
