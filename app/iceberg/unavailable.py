"""What a catalog that is down, overloaded or unreachable raises: the call may succeed once it is back.

REST catalogs answer 5xx and 429 (pyiceberg raises ServerError, ServiceUnavailableError,
TooManyRequestsError); connection failures and timeouts are OSError (requests' exceptions included).
"""

from __future__ import annotations

from pyiceberg.exceptions import ServerError, ServiceUnavailableError, TooManyRequestsError

CATALOG_UNAVAILABLE: tuple[type[Exception], ...] = (
    ServiceUnavailableError,
    ServerError,
    TooManyRequestsError,
    OSError,
    ConnectionError,
)
