"""Loading catalogs and tables, with Floe's errors instead of pyiceberg's."""

from __future__ import annotations

import threading

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import (
    NoSuchNamespaceError,
    NoSuchTableError,
)
from pyiceberg.table import Table

from app.errors import CatalogUnavailable, ConfigError, NotFound
from app.iceberg.unavailable import CATALOG_UNAVAILABLE
from app.jobs.validation import check_table_name
from app.settings import Settings

_lock = threading.Lock()
_catalogs: dict[tuple[str, tuple[tuple[str, str], ...]], Catalog] = {}


def get_catalog(settings: Settings, name: str | None = None) -> Catalog:
    """The catalog called ``name`` (the configured one when empty), loaded once per process."""
    name = name or settings.catalog_name
    props = settings.catalog_properties if name == settings.catalog_name else {}
    key = (name, tuple(sorted(props.items())))
    with _lock:
        if key not in _catalogs:
            from pyiceberg.utils.config import Config

            configured = Config().get_catalog_config(name) or {}
            if not props and not configured:
                raise NotFound(
                    f"catalog {name!r} is not configured here (this process serves {settings.catalog_name!r}; "
                    "others come from pyiceberg's configuration)"
                )
            load_props = dict(props)
            if (props.get("type") or configured.get("type")) == "sql" and "pool_pre_ping" not in configured:
                # a pooled connection the database dropped (a restart, a failover, an idle timeout) is
                # replaced before use instead of failing the next catalog call
                load_props.setdefault("pool_pre_ping", "true")
            try:
                _catalogs[key] = load_catalog(name, **load_props)
            except (ValueError, KeyError, ImportError) as exc:
                raise ConfigError(f"catalog {name!r} cannot be loaded: {exc}") from exc
            except CATALOG_UNAVAILABLE as exc:
                raise CatalogUnavailable(
                    f"catalog {name!r} cannot be reached: {type(exc).__name__}: {str(exc).splitlines()[0]}"
                ) from exc
        return _catalogs[key]


def load_table(catalog: Catalog, namespace: str, table: str) -> Table:
    check_table_name(namespace, table)
    try:
        return catalog.load_table((*namespace.split("."), table))
    except (NoSuchTableError, NoSuchNamespaceError):
        raise NotFound(f"table {namespace}.{table} does not exist in catalog {catalog.name!r}") from None
    except CATALOG_UNAVAILABLE as exc:
        raise CatalogUnavailable(
            f"catalog {catalog.name!r} could not load {namespace}.{table}: {type(exc).__name__}: {exc}"
        ) from exc
