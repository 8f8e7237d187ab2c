"""What a catalog that is down, overloaded or unreachable raises: the call may succeed once it is back.

REST catalogs answer 5xx and 429 (pyiceberg raises ServerError, ServiceUnavailableError,
TooManyRequestsError); connection failures and timeouts are OSError (requests' exceptions included).
SQL catalogs raise SQLAlchemy's OperationalError when the database is down, restarting or dropped the
connection (PostgreSQL: "server closed the connection unexpectedly", "connection refused"; SQLite:
"database is locked"), and InterfaceError when the connection is already closed.
"""

from __future__ import annotations

from pyiceberg.exceptions import ServerError, ServiceUnavailableError, TooManyRequestsError
from sqlalchemy.exc import InterfaceError, OperationalError

CATALOG_UNAVAILABLE: tuple[type[Exception], ...] = (
    ServiceUnavailableError,
    ServerError,
    TooManyRequestsError,
    OSError,
    ConnectionError,
    OperationalError,
    InterfaceError,
)
