"""Exceptions of the collectors and sinks (one base, no protocol library types leak out)."""

from __future__ import annotations


class CollectorError(Exception):
    """A poll failed; ``exception_code`` is the Modbus exception code when there was one."""

    def __init__(self, message: str, *, exception_code: int | None = None) -> None:
        super().__init__(message)
        self.exception_code = exception_code


class SinkError(Exception):
    """A batch was not written; ``retryable`` says whether sending it again may succeed."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class SpoolFull(Exception):
    """The telemetry spool is at its bound (policy ``reject``): the readings were not accepted.
    The caller must not acknowledge them to their source (MQTT) or must count them as lost."""
