"""One error hierarchy for Floe.

Every error carries the gRPC status code name that the server interceptor maps it to, so
the core never imports gRPC. Errors split into permanent ones (retrying cannot help: bad
input, missing table, unsupported format) and retryable ones (a conflict, a lost
connection, an outcome not yet known).
"""

from __future__ import annotations


class FloeError(Exception):
    """Root of every error Floe raises on purpose."""

    grpc_code: str = "INTERNAL"
    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PermanentError(FloeError):
    """Retrying cannot help; the job that meets it fails with this reason."""

    grpc_code = "FAILED_PRECONDITION"


class InvalidArgument(PermanentError):
    grpc_code = "INVALID_ARGUMENT"


class ConfigError(InvalidArgument):
    """A configuration value (environment variable, table property) is wrong."""


class SourceError(InvalidArgument):
    """A source file cannot be converted: unreadable, unsupported, or not castable to the table."""


class NotFound(PermanentError):
    grpc_code = "NOT_FOUND"


class FailedPrecondition(PermanentError):
    grpc_code = "FAILED_PRECONDITION"


class UnsupportedTable(FailedPrecondition):
    """The table cannot be written by Floe (e.g. format version 3 with pyiceberg 0.12)."""


class AlreadyExists(PermanentError):
    grpc_code = "ALREADY_EXISTS"


class Unauthenticated(PermanentError):
    grpc_code = "UNAUTHENTICATED"


class RetryableError(FloeError):
    """Transient: the same call may succeed later."""

    grpc_code = "UNAVAILABLE"
    retryable = True


class CatalogUnavailable(RetryableError):
    """The Iceberg catalog is down, overloaded or unreachable: the call may succeed once it is back."""


class ResourceExhausted(RetryableError):
    """A server-side limit is reached (e.g. open WatchJob streams); retry later or use another call."""

    grpc_code = "RESOURCE_EXHAUSTED"


class CommitConflict(RetryableError):
    """Another writer kept moving the table and the commit ran out of retries."""

    grpc_code = "ABORTED"

    def __init__(self, message: str, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts


class CommitInProgress(RetryableError):
    """Another committer holds the job's commit lease; retry (a dead committer's lease runs out in seconds)."""

    grpc_code = "ABORTED"


class CommitStateUnknown(RetryableError):
    """The catalog call may or may not have landed; nothing may be deleted."""
