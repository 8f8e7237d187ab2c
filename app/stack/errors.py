"""The local stack's one error type: :class:`StackError`, raised when a process of the stack
(Redis, the coordinator, a host, beat or Flower) cannot be started, dies, or cannot get the
ports it needs; it is a :class:`~app.errors.FloeError` like every error Floe reports.
"""

from __future__ import annotations

from app.errors import FloeError


class StackError(FloeError):
    """A process of the local stack could not be started or died."""
