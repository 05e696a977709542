"""Serving errors: a canonical status code plus a message, as TF Serving reports them.

The gRPC service returns the code as the RPC status, the REST API as an HTTP status
(TF Serving's own mapping, `ToHTTPStatusCode` in its http_server.cc) with the body
`{"error": message}`. TensorFlow's runtime errors carry the same canonical codes, so they
are translated one to one.
"""

from __future__ import annotations

from http import HTTPStatus

import grpc

_HTTP_BY_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: HTTPStatus.OK,
    grpc.StatusCode.CANCELLED: 499,  # "client closed request", as TF Serving answers
    grpc.StatusCode.UNKNOWN: HTTPStatus.INTERNAL_SERVER_ERROR,
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: HTTPStatus.CONFLICT,
    grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.ABORTED: HTTPStatus.CONFLICT,
    grpc.StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
    grpc.StatusCode.INTERNAL: HTTPStatus.INTERNAL_SERVER_ERROR,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS: HTTPStatus.INTERNAL_SERVER_ERROR,
    grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
}
_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request or load failure with its canonical status code.

    Attributes:
        code: the gRPC status code (the same numbers as TensorFlow's error codes).
        message: what went wrong, in TF Serving's words where it has them.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def code_name(self) -> str:
        """The canonical name, e.g. "INVALID_ARGUMENT"."""
        return str(self.code.name)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def http_status(code: grpc.StatusCode) -> int:
    """TF Serving's HTTP status for a canonical status code."""
    return int(_HTTP_BY_CODE.get(code, HTTPStatus.INTERNAL_SERVER_ERROR))


def code_from_number(number: int) -> grpc.StatusCode:
    """The gRPC status code of a TensorFlow / absl error code number (UNKNOWN when out of range)."""
    return _CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unavailable(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNAVAILABLE, message)


def internal(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INTERNAL, message)


def unimplemented(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNIMPLEMENTED, message)


def resource_exhausted(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def deadline_exceeded(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, message)


def permission_denied(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.PERMISSION_DENIED, message)


def servable_not_found(name: str, version: int | None = None, label: str | None = None) -> ServingError:
    """TF Serving's NOT_FOUND for a model name, version or label that is not being served."""
    if version is not None:
        request = f"Specific({name}, {version})"
    elif label is not None:
        request = f"Specific({name}, label {label})"  # TF Serving resolves a label to a version first
    else:
        request = f"Latest({name})"
    return not_found(f"Servable not found for request: {request}")
