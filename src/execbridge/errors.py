"""The one root of execbridge's exceptions.

Every error the gateway raises on purpose derives from ``ExecbridgeError``; the API layer maps each
class to the client's error type and HTTP status in one table (``api/errors.py``), so nothing here
knows about wire formats.

    ExecbridgeError
    ├── InvalidRequest            the client sent something we cannot serve (400)
    │   └── RequestTooLarge       a body or file over a configured limit (413)
    ├── AuthenticationFailed      missing or unknown credentials (401)
    ├── PermissionDenied          the key may not do this (403)
    ├── NotFound                  unknown id, or one owned by another key (404)
    ├── UpstreamError             the model server failed; keeps its status and message
    │   ├── UpstreamRateLimited   429 after retries (429)
    │   ├── UpstreamOverloaded    503/529 after retries (529)
    │   └── UpstreamTimeout       no answer in time (504)
    ├── SandboxError              a container could not be started or talked to (500)
    │   └── SandboxUnavailable    a required protection is missing on this machine
    ├── StorageError              file bytes could not be written or read on the gateway (500)
    │   └── StoreBusy             another process holds the database's lock; retry (503)
    ├── QuotaExceeded             a budget of the gateway is used up for now; retry later (429)
    ├── ShuttingDown              the gateway is stopping; retry (on another replica, or after it) (503)
    └── ConfigurationError        settings that cannot work; raised at start-up

A program that fails inside a sandbox is *not* an error here: it is an ``ExecutionResult`` with a
non-zero return code.
"""

from __future__ import annotations


class ExecbridgeError(Exception):
    """Base of every deliberate execbridge error; ``message`` is safe to show a client."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, object] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details  # more of ``error.details`` next to ``error_code`` (e.g. what is unsupported)
        self.param = param  # the request field at fault, for APIs that name it (OpenAI's ``error.param``)


class InvalidRequest(ExecbridgeError):
    pass


class RequestTooLarge(InvalidRequest):
    pass


class AuthenticationFailed(ExecbridgeError):
    pass


class PermissionDenied(ExecbridgeError):
    pass


class NotFound(ExecbridgeError):
    pass


class UpstreamError(ExecbridgeError):
    """The upstream model server answered with an error (or not at all).

    ``status`` is the upstream's HTTP status when there was one; the message keeps the upstream's own
    words so a Databricks user sees what Databricks said.
    """

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.retry_after = retry_after


class UpstreamRateLimited(UpstreamError):
    pass


class UpstreamOverloaded(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class SandboxError(ExecbridgeError):
    pass


class SandboxUnavailable(SandboxError):
    pass


class StorageError(ExecbridgeError):
    """The gateway's own disk failed us (full, unreadable); the message names the operation only."""


class StoreBusy(StorageError):
    """The metadata store stayed locked by another process (a backup, a hand-run ``sqlite3``, a second
    gateway on the same data directory) past the busy timeout: nothing was written; the same request
    can succeed once the lock goes, so ``retry_after`` says when to try again."""

    def __init__(self, message: str, *, retry_after: float | None = 1.0) -> None:
        super().__init__(message, code="store_busy")
        self.retry_after = retry_after


class QuotaExceeded(ExecbridgeError):
    """A budget that protects the host is used up (containers alive, containers in all); ``retry_after``
    says when trying again makes sense."""

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ShuttingDown(ExecbridgeError):
    """The gateway is stopping: a new request arrived while it drains, or an in-flight one outlived the
    grace period (``shutdown_grace_s``)."""

    def __init__(self, message: str, *, retry_after: float | None = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigurationError(ExecbridgeError):
    pass
