"""Typed errors of the lifecycle package. Each has a stable ``code`` and says whether a retry may help.

Handlers translate them into responses in one place; messages are safe to show and to log.
"""

from __future__ import annotations


class AppAuthError(Exception):
    code = "app-auth-error"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class InvalidRequest(AppAuthError):
    """Input that fails validation: the caller can fix it; Alipay is never called for it."""

    code = "invalid-request"


class StateRejected(InvalidRequest):
    """The authorization link's ``state`` is forged, expired, already used or missing."""

    code = "state-rejected"


class NotFound(AppAuthError):
    code = "not-found"


class ConcurrentUpdate(AppAuthError):
    """A conditional write lost to another writer: re-read and decide again."""

    code = "concurrent-update"
    retryable = True


class StorageError(AppAuthError):
    """DynamoDB, KMS or the queue failed in a way that is not the caller's doing."""

    code = "storage-error"
    retryable = True


class AlipayUnavailable(AppAuthError):
    """Alipay could not answer a question a decision depends on: the decision waits (the caller
    tries again later, as Alipay does with a notification answered ``fail``)."""

    code = "alipay-unavailable"
    retryable = True


class EncryptionError(AppAuthError):
    """A sealed field could not be opened: wrong key, wrong item, or tampering."""

    code = "encryption-error"


class NotConfigured(AppAuthError):
    """This service's own configuration is missing or unusable: the placeholder secret the stack
    creates, or a secret that does not load. Nothing a caller sent is at fault."""

    code = "not-configured"


class ConfigurationRefused(AppAuthError):
    """Alipay refused this service itself (app id, keys, certificates): no merchant's grant is at
    fault, so no token is changed for it. ``alipay_code`` is Alipay's code."""

    code = "configuration-refused"

    def __init__(self, alipay_code: str) -> None:
        super().__init__(
            f"Alipay refused this service's configuration ({alipay_code}): check the app id, keys and "
            "certificates in the Alipay secret with `alipay-v3 keys check`; no token was changed"
        )
        self.alipay_code = alipay_code
