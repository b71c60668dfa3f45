"""The controller's one error tree and its one table of gRPC status codes.

Errors are sorted by whether a retry helps: `Temporary` ones (a lost etcd
connection, a conflicting write) are retried by the work queue; the others
are answers to give the caller. `STATUS_CODES` is the only place domain
errors meet gRPC codes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from gantry.client import not_leader_details

log = logging.getLogger(__name__)


class GantryError(Exception):
    """Any failure the controller reports."""


class NotFound(GantryError):
    """The named object does not exist."""


class Invalid(GantryError):
    """The request or manifest is malformed; the message locates each error."""


class AlreadyExists(GantryError):
    """The object exists and the call needed it absent."""


class Temporary(GantryError):
    """A retry may succeed."""


class Conflict(Temporary):
    """A compare-and-swap lost against a concurrent write: re-read and retry."""


class StoreUnavailable(Temporary):
    """etcd could not be reached or timed out."""


class NotLeader(GantryError):
    """This controller does not lead (or was deposed): writes are fenced off."""

    def __init__(self, leader_address: str = "") -> None:
        super().__init__(not_leader_details(leader_address))
        self.leader_address = leader_address


class Unimplemented(GantryError):
    """The call exists in the contract but is not served yet."""


STATUS_CODES: dict[type[GantryError], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    Invalid: grpc.StatusCode.INVALID_ARGUMENT,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Conflict: grpc.StatusCode.ABORTED,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    Temporary: grpc.StatusCode.UNAVAILABLE,
    NotLeader: grpc.StatusCode.FAILED_PRECONDITION,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    GantryError: grpc.StatusCode.INTERNAL,
}


def status_code(exc: BaseException) -> grpc.StatusCode:
    """The status code for `exc`: the nearest class in the table, else INTERNAL."""
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]  # type: ignore[index]
    return grpc.StatusCode.INTERNAL


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def unary(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap a unary servicer method: domain errors become status codes, never tracebacks."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except GantryError as exc:
            await context.abort(status_code(exc), one_line(exc))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            log.exception("%s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{fn.__name__}: {one_line(exc)}")

    return wrapper


def streaming(fn: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """Wrap a server-streaming servicer method like `unary`."""

    @functools.wraps(fn)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        try:
            async for item in fn(self, request, context):
                yield item
        except GantryError as exc:
            await context.abort(status_code(exc), one_line(exc))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            log.exception("%s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{fn.__name__}: {one_line(exc)}")

    return wrapper
