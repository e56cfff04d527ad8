"""One error tree for the whole product.

Every error carries the wire code Zeebe uses for it and whether a client may retry. The gateway's
aiohttp middleware maps these to HTTP status codes in one place; handlers raise, they do not
build error responses themselves.
"""

from __future__ import annotations

from typing import ClassVar


class ZeebeSimError(Exception):
    """Root of every error zeebe-sim raises on purpose."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    retriable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InternalError(ZeebeSimError):
    code = "INTERNAL_ERROR"


class PartitionLeaderMismatch(ZeebeSimError):
    """The broker asked does not lead the partition (any more)."""

    code = "PARTITION_LEADER_MISMATCH"
    retriable = True

    def __init__(self, message: str, leader: int | None = None) -> None:
        super().__init__(message)
        # the leader the answering replica knows of, if any (a hint for the gateway)
        self.leader = leader


class UnsupportedMessage(ZeebeSimError):
    code = "UNSUPPORTED_MESSAGE"


class MalformedRequest(ZeebeSimError):
    code = "MALFORMED_REQUEST"


class ResourceExhausted(ZeebeSimError):
    """Backpressure or out of disk: the request may succeed later."""

    code = "RESOURCE_EXHAUSTED"
    retriable = True


class ProtocolError(ZeebeSimError):
    """Bytes on a connection that are not a valid frame or message: the connection is closed."""

    code = "MALFORMED_REQUEST"


class NotFound(ZeebeSimError):
    code = "NOT_FOUND"


class InvalidArgument(ZeebeSimError):
    code = "INVALID_ARGUMENT"


class AlreadyExists(ZeebeSimError):
    code = "ALREADY_EXISTS"


class InvalidState(ZeebeSimError):
    code = "INVALID_STATE"


class ConfigError(ZeebeSimError):
    """Bad configuration: the CLI prints one line and exits with code 2."""

    code = "INVALID_ARGUMENT"


class BrokerUnavailable(ZeebeSimError):
    """No connection to the broker leading a partition (HTTP 502)."""

    code = "UNAVAILABLE"
    retriable = True


class ConnectionLost(BrokerUnavailable):
    """The connection dropped after a request was sent: it may or may not have been executed,
    so only idempotent requests may be retried."""


class RequestTimeout(ZeebeSimError):
    """No answer within the gateway's request timeout (HTTP 504)."""

    code = "DEADLINE_EXCEEDED"
    retriable = True


class BackupNotConfigured(ZeebeSimError):
    """A backup request to a cluster without a backup store (HTTP 400, Zeebe's message)."""

    code = "BACKUP_NOT_CONFIGURED"

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "Cannot process backup requests. No backup store is configured. To use this "
            "feature, configure backup in broker configuration."
        )


class BackupStoreError(ZeebeSimError):
    """A backup store operation failed (I/O, S3, a manifest in the wrong state)."""

    code = "INTERNAL_ERROR"


class SaveOvertaken(BackupStoreError):
    """A save lost to a delete or mark-failed that happened while it uploaded: the store holds
    the outcome (deleted, or FAILED), not this save."""


class StorageCorruption(ZeebeSimError):
    """A checksum did not match where a complete file was expected."""

    code = "INTERNAL_ERROR"


# Wire code -> class, for turning an ErrorResponse back into an exception on the client side.
BY_CODE: dict[str, type[ZeebeSimError]] = {}
for _cls in (
    InternalError,
    PartitionLeaderMismatch,
    UnsupportedMessage,
    MalformedRequest,
    ResourceExhausted,
    NotFound,
    InvalidArgument,
    AlreadyExists,
    InvalidState,
    BrokerUnavailable,
    RequestTimeout,
    BackupNotConfigured,
):
    BY_CODE.setdefault(_cls.code, _cls)


def from_code(code: str, message: str, leader: int | None = None) -> ZeebeSimError:
    """The error an ErrorResponse stands for; ``leader`` is its hint (leader mismatch only)."""
    if code == PartitionLeaderMismatch.code:
        return PartitionLeaderMismatch(message, leader)
    return BY_CODE.get(code, InternalError)(message)
