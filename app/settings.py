"""One typed settings object, built once per process from the environment.

The catalog reuses pyiceberg's own configuration (``.pyiceberg.yaml`` and
``PYICEBERG_CATALOG__<NAME>__<KEY>``); the walkthrough's ``ICEBERG_CATALOG_NAME``,
``ICEBERG_CATALOG_TYPE``, ``ICEBERG_CATALOG_URI`` and ``ICEBERG_WAREHOUSE`` are mapped onto
it. With nothing configured, the embedded default is a SQL catalog on SQLite and a
``file://`` warehouse under ``$FLOE_HOME`` (default ``./.floe``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.errors import ConfigError
from app.security import TransportSecurity
from app.values import parse_int

CATALOG_TYPES = ("rest", "sql", "hive", "glue", "dynamodb", "in-memory", "bigquery")
DEFAULT_CATALOG_NAME = "default"
WRITE_BUFFER_ENV = "FLOE_WRITE_BUFFER_BYTES"
DEFAULT_WRITE_BUFFER_BYTES = 256 * 1024 * 1024
# a group of one host's tasks (one Celery message) that has run this long hands its remaining tasks back
# to the queue one message each, so tasks that turn out big spread over the host's processes
DEFAULT_GROUP_BUDGET_MS = 1000
DEFAULT_PLAN_MIN_TASK_BYTES = 32 * 1024 * 1024  # below this, another process costs more than it saves
# a task manifest whose entries take at most this many bytes is kept in the job store, not written as a
# file (app/iceberg/inline_manifest.py): a tiny task's is a few hundred bytes; 0 = always a file
DEFAULT_INLINE_MANIFEST_BYTES = 16 * 1024
MAX_INLINE_MANIFEST_BYTES = 1024 * 1024


def _int_env(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    return parse_int(env.get(name), name, default, minimum, ConfigError)


def _port_env(env: Mapping[str, str], name: str) -> int:
    value = _int_env(env, name, 0, minimum=0)
    if value > 65535:
        raise ConfigError(f"{name}={value} is not a TCP port (0-65535; 0 = off)")
    return value


def _inline_manifest_env(env: Mapping[str, str]) -> int:
    name = "FLOE_INLINE_MANIFEST_BYTES"
    value = _int_env(env, name, DEFAULT_INLINE_MANIFEST_BYTES, minimum=0)
    if value > MAX_INLINE_MANIFEST_BYTES:
        raise ConfigError(
            f"{name}={value} is too large: at most {MAX_INLINE_MANIFEST_BYTES} (a manifest kept in Redis is "
            "read back with every other one of its job at commit; a larger one is better written as a file)"
        )
    return value


def _address_env(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name) or default
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name}={raw!r} is not an address of the form [host]:port")
    return f"{host or '[::]'}:{port}"


@dataclass(frozen=True)
class Settings:
    home: Path
    catalog_name: str
    catalog_properties: dict[str, str]
    redis_url: str | None
    coordinator_address: str
    worker_id: str | None
    worker_data_base: Path | None
    worker_address: str
    job_retention_seconds: int
    visibility_timeout_seconds: int
    watchdog_interval_seconds: int
    metrics_port: int
    worker_concurrency: int  # 0 = one Celery process per core
    write_buffer_bytes: int
    group_budget_ms: int  # a group of tasks in one message hands the rest back as messages after this long
    plan_min_task_bytes: int  # a host's planner makes no task smaller than this (unless it is all)
    inline_manifest_bytes: int  # a task manifest this small is kept in the job store, not written (0: never)
    arrow_memory_pool: str | None  # ARROW_DEFAULT_MEMORY_POOL; None = Floe picks jemalloc
    log_format: str  # json | text
    log_level: str
    security: TransportSecurity
    demo_home: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("FLOE_HOME") or ".floe").absolute()
        name = env.get("ICEBERG_CATALOG_NAME") or DEFAULT_CATALOG_NAME
        props = _catalog_properties(env, name, home)
        data_base = env.get("WORKER_DATA_BASE")
        worker_id = env.get("WORKER_ID") or None
        if worker_id is not None and not _is_queue_safe(worker_id):
            raise ConfigError(
                f"WORKER_ID={worker_id!r} may hold only letters, digits, '-', '_' and '.' (it names a queue)"
            )
        return cls(
            home=home,
            catalog_name=name,
            catalog_properties=props,
            redis_url=env.get("REDIS_URL") or None,
            coordinator_address=_address_env(env, "COORDINATOR_ADDRESS", ":50051"),
            worker_id=worker_id,
            worker_data_base=Path(data_base).absolute() if data_base else None,
            worker_address=_address_env(env, "WORKER_ADDRESS", ":50052"),
            job_retention_seconds=_int_env(env, "FLOE_JOB_RETENTION_SECONDS", 7 * 24 * 3600),
            visibility_timeout_seconds=_int_env(env, "FLOE_VISIBILITY_TIMEOUT_SECONDS", 3600),
            watchdog_interval_seconds=_int_env(env, "FLOE_WATCHDOG_INTERVAL_SECONDS", 5),
            metrics_port=_port_env(env, "FLOE_METRICS_PORT"),
            worker_concurrency=_int_env(env, "FLOE_WORKER_CONCURRENCY", 0, minimum=0),
            write_buffer_bytes=_int_env(env, WRITE_BUFFER_ENV, DEFAULT_WRITE_BUFFER_BYTES, minimum=1 << 20),
            group_budget_ms=_int_env(env, "FLOE_GROUP_BUDGET_MS", DEFAULT_GROUP_BUDGET_MS, minimum=0),
            plan_min_task_bytes=_int_env(env, "FLOE_PLAN_MIN_TASK_BYTES", DEFAULT_PLAN_MIN_TASK_BYTES, minimum=1),
            inline_manifest_bytes=_inline_manifest_env(env),
            arrow_memory_pool=env.get("ARROW_DEFAULT_MEMORY_POOL") or None,
            log_format=_choice_env(env, "FLOE_LOG_FORMAT", ("json", "text")),
            log_level=_choice_env(env, "FLOE_LOG_LEVEL", ("INFO", "DEBUG", "WARNING", "ERROR", "CRITICAL")),
            security=security_from_env(env),
            demo_home=Path(env.get("FLOE_HOME") or ".floe/demo").absolute(),
        )


def _choice_env(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name) or choices[0]
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}")


def _coordinator_target(env: Mapping[str, str]) -> str:
    """``FLOE_COORDINATOR``, else the local address ``COORDINATOR_ADDRESS`` listens on."""
    if target := env.get("FLOE_COORDINATOR"):
        return target
    address = env.get("COORDINATOR_ADDRESS") or ":50051"
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def security_from_env(env: Mapping[str, str]) -> TransportSecurity:
    """TLS files (``FLOE_TLS_CERT``/``KEY``/``CA``) and the bearer token (``FLOE_AUTH_TOKEN``)."""

    def read(name: str) -> bytes | None:
        path = env.get(name)
        if not path:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{name}={path!r} cannot be read: {exc.strerror}") from None

    cert, key, ca = read("FLOE_TLS_CERT"), read("FLOE_TLS_KEY"), read("FLOE_TLS_CA")
    if (cert is None) != (key is None):
        raise ConfigError("FLOE_TLS_CERT and FLOE_TLS_KEY must be set together")
    token = env.get("FLOE_AUTH_TOKEN") or None
    if token is not None and (len(token) < 16 or any(c.isspace() for c in token)):
        raise ConfigError("FLOE_AUTH_TOKEN must be at least 16 characters without spaces")
    return TransportSecurity(cert, key, ca, token)


def _is_queue_safe(value: str) -> bool:
    # ASCII only: task hosts are checked the same way (app.jobs.validation), so a worker id the
    # coordinator would refuse as a host can never start.
    return re.fullmatch(r"[A-Za-z0-9._-]{1,128}", value) is not None


def _catalog_properties(env: Mapping[str, str], name: str, home: Path) -> dict[str, str]:
    """The properties handed to ``pyiceberg.catalog.load_catalog(name, **props)``.

    pyiceberg merges them over its own configuration for ``name``; when neither the ICEBERG_*
    variables nor pyiceberg's configuration describe the catalog, the embedded default is used.
    """
    from pyiceberg.utils.config import Config

    props: dict[str, str] = {}
    ctype = env.get("ICEBERG_CATALOG_TYPE")
    if ctype:
        if ctype.lower() not in CATALOG_TYPES:
            raise ConfigError(
                f"ICEBERG_CATALOG_TYPE={ctype!r} is not a catalog type pyiceberg knows "
                f"(one of {', '.join(CATALOG_TYPES)})"
            )
        props["type"] = ctype.lower()
    if uri := env.get("ICEBERG_CATALOG_URI"):
        props["uri"] = uri
    if warehouse := env.get("ICEBERG_WAREHOUSE"):
        props["warehouse"] = warehouse
    configured = Config().get_catalog_config(name)
    if not props and not configured:
        home.mkdir(parents=True, exist_ok=True)
        (home / "warehouse").mkdir(exist_ok=True)
        props = {
            "type": "sql",
            "uri": f"sqlite:///{home / 'catalog.db'}",
            "warehouse": (home / "warehouse").as_uri(),
        }
    elif props.get("type") == "sql" and "uri" not in props and not (configured or {}).get("uri"):
        raise ConfigError("ICEBERG_CATALOG_TYPE=sql needs ICEBERG_CATALOG_URI (an SQLAlchemy URL)")
    return props


_settings: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def client_connection() -> tuple[str, TransportSecurity]:
    """Where and how a client reaches the coordinator (FLOE_COORDINATOR / COORDINATOR_ADDRESS, TLS, token),
    read from the environment when the client is made: a client may be made after it changed."""
    return _coordinator_target(os.environ), security_from_env(os.environ)


def reset_settings() -> None:
    """Forget the cached settings (tests and `floe` subcommands that change the environment)."""
    global _settings
    _settings = None
