"""Structured logs: one JSON object per line, carrying job_id (and other context) when there is one.

``FLOE_LOG_FORMAT=text`` switches to plain lines; ``FLOE_LOG_LEVEL`` sets the level (INFO).
Values that look like credentials in URLs (``scheme://user:password@host``) are masked.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_URL_SECRET = re.compile(r"(\w+://[^:/@\s]*:)[^@\s]+@")


current_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("floe_job_id", default=None)


class JobContextFilter(logging.Filter):
    """Adds the job id of the task being run to every record that does not carry one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id") and (job_id := current_job_id.get()) is not None:
            record.job_id = job_id
        return True


def mask_secrets(text: str) -> str:
    return _URL_SECRET.sub(r"\1***@", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": mask_secrets(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = (
                    value
                    if isinstance(value, (int, float, bool)) or value is None
                    else mask_secrets(str(value))
                )
        if record.exc_info:
            payload["exc"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)


def configure_logging() -> None:
    root = logging.getLogger()
    if getattr(root, "_floe_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    from app.settings import get_settings

    settings = get_settings()
    if settings.log_format == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    handler.addFilter(JobContextFilter())
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    root._floe_configured = True  # type: ignore[attr-defined]
