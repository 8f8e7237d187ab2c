"""One server interceptor: Floe errors become status codes with their message; anything else is
INTERNAL with a reference id and a logged traceback. Never UNKNOWN, never a traceback to the client."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from app.errors import FloeError

log = logging.getLogger("floe.grpc")
# A status message travels in trailing metadata, which gRPC clients refuse beyond 16 KiB in all (the
# call then fails RESOURCE_EXHAUSTED instead): a message quoting a huge field is cut well below that.
MAX_DETAILS_CHARS = 4096


def details(message: str) -> str:
    """``message``, cut to :data:`MAX_DETAILS_CHARS` characters (saying so) when longer."""
    if len(message) <= MAX_DETAILS_CHARS:
        return message
    return f"{message[: MAX_DETAILS_CHARS - 60]}... (message cut: {len(message):,} characters in all)"


def _abort_for(exc: BaseException, context: grpc.ServicerContext, method: str) -> None:
    if isinstance(exc, FloeError):
        context.abort(grpc.StatusCode[exc.grpc_code], details(exc.message))
    ref = uuid.uuid4().hex[:12]
    log.error("unexpected error in %s (ref %s)", method, ref, exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref}); the server log has the details")


class _Undecodable:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """grpc turns a deserializer's exception into INTERNAL; hand the handler a marker instead."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the caller's bad input
            return _Undecodable(str(exc) or type(exc).__name__)

    return deserialize


def _refuse_undecodable(request: Any, context: grpc.ServicerContext, method: str) -> None:
    if isinstance(request, _Undecodable):
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {method} message: {request.reason}"
        )


def _wrap_unary(fn: Callable[..., Any], method: str) -> Callable[..., Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        _refuse_undecodable(request, context, method)
        try:
            return fn(request, context)
        except Exception as exc:  # noqa: BLE001 - this is the one place errors are mapped
            if _is_abort(exc):
                raise
            _abort_for(exc, context, method)

    return handler


def _wrap_stream(fn: Callable[..., Iterator[Any]], method: str) -> Callable[..., Iterator[Any]]:
    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        _refuse_undecodable(request, context, method)
        try:
            yield from fn(request, context)
        except Exception as exc:  # noqa: BLE001
            if _is_abort(exc):
                raise
            _abort_for(exc, context, method)

    return handler


def _is_abort(exc: BaseException) -> bool:
    # grpc's context.abort() raises a bare ``Exception()``: let it through untouched.
    return type(exc) is Exception and not exc.args


class ErrorInterceptor(grpc.ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method),
                request_deserializer=_safe(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method),
                request_deserializer=_safe(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler
