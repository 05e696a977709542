"""The exceptions of `serving.client`: one base class, one subclass per failure a caller handles.

gRPC status codes map to them in `from_rpc_error`: NOT_FOUND -> ModelNotFoundError,
INVALID_ARGUMENT -> InvalidRequestError, UNAVAILABLE (after the retries) ->
ServerUnavailableError, DEADLINE_EXCEEDED -> DeadlineExceededError, anything else ->
RecommenderError with its code.
"""

from __future__ import annotations

import grpc


class RecommenderError(Exception):
    """Base class of the client's errors.

    Attributes:
        code: the gRPC status code when the server answered with an error, else None.
        model: the model the failing call was for, when there is one.
    """

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, model: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.model = model


class ModelNotFoundError(RecommenderError):
    """The server does not serve the model, version, label or signature (NOT_FOUND)."""


class InvalidRequestError(RecommenderError):
    """The request is malformed: rejected by the client before sending, or INVALID_ARGUMENT."""


class InvalidArgumentError(InvalidRequestError, ValueError):
    """An argument refused before it is sent: a `k` that is not an int >= 1, a feature string that cannot be
    encoded as UTF-8 (a lone surrogate), or an integer feature out of its dtype's range (e.g. a `request_time`
    beyond int64); `argument` names it ("k" or the feature)."""

    def __init__(self, message: str, *, argument: str) -> None:
        super().__init__(message)
        self.argument = argument


class ServerUnavailableError(RecommenderError):
    """The server could not be reached, or stayed UNAVAILABLE through every retry."""


class DeadlineExceededError(RecommenderError):
    """A call did not finish within the client's timeout (DEADLINE_EXCEEDED)."""


class UnexpectedResponseError(RecommenderError):
    """The server answered, but not with what the serving contract promises (missing output, bad shape)."""


_ERROR_BY_CODE: dict[grpc.StatusCode, type[RecommenderError]] = {
    grpc.StatusCode.NOT_FOUND: ModelNotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.UNAVAILABLE: ServerUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def from_rpc_error(error: grpc.RpcError, *, model: str, method: str, attempts: int = 1) -> RecommenderError:
    """The client error for a failed RPC, naming the model, the method and the server's message."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    tried = f" (after {attempts} attempts)" if attempts > 1 else ""
    message = f"{method} on model {model!r} failed with {code.name}{tried}: {details}"
    return _ERROR_BY_CODE.get(code, RecommenderError)(message, code=code, model=model)
