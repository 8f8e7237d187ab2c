"""Loading catalogs and tables, with Floe's errors instead of pyiceberg's."""

from __future__ import annotations

import threading

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.table import Table

from app.errors import ConfigError, InvalidArgument, NotFound
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

            if not props and not Config().get_catalog_config(name):
                raise NotFound(
                    f"catalog {name!r} is not configured here (this process serves {settings.catalog_name!r}; "
                    "others come from pyiceberg's configuration)"
                )
            try:
                _catalogs[key] = load_catalog(name, **props)
            except (ValueError, KeyError, ImportError) as exc:
                raise ConfigError(f"catalog {name!r} cannot be loaded: {exc}") from exc
        return _catalogs[key]


def validate_identifier(namespace: str, table: str) -> None:
    if not table:
        raise InvalidArgument("table.table is required (the table's name)")
    if not namespace:
        raise InvalidArgument("table.namespace is required")
    if any(not part.strip() for part in namespace.split(".")):
        raise InvalidArgument(f"table.namespace={namespace[:80]!r} has an empty level")
    for label, value in (("table.namespace", namespace), ("table.table", table)):
        if len(value) > 255 or any(ord(c) < 32 for c in value) or value != value.strip():
            raise InvalidArgument(f"{label}={value!r} is not a valid identifier")
    if "." in table:
        raise InvalidArgument(
            f"table.table={table!r} must not contain '.' (put the namespace in table.namespace)"
        )


def load_table(catalog: Catalog, namespace: str, table: str) -> Table:
    validate_identifier(namespace, table)
    try:
        return catalog.load_table((*namespace.split("."), table))
    except (NoSuchTableError, NoSuchNamespaceError):
        raise NotFound(f"table {namespace}.{table} does not exist in catalog {catalog.name!r}") from None
