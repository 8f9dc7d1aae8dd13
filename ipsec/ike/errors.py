"""Errors of the IKEv2 codec and crypto, saying whose fault it was.

Every error carries the Notify Message Type (RFC 7296 section 3.10.1) the
caller should answer with, or None when nothing must be sent. The state
machine decides whether and how to send it (e.g. RFC 7296 section 2.21: an
error in an unauthenticated message may only be answered, never acted on).
"""

from __future__ import annotations

from typing import ClassVar


class IkeError(Exception):
    """Base of all IKE errors; ``notify`` is the notify type to send, or None."""

    fault: ClassVar[str] = "unknown"

    def __init__(self, message: str, *, notify: int | None = None, notify_data: bytes = b"") -> None:
        super().__init__(message)
        self.notify = notify
        # Some error notifies carry data, e.g. INVALID_KE_PAYLOAD the accepted
        # group (3.10.1) or UNSUPPORTED_CRITICAL_PAYLOAD the payload type.
        self.notify_data = notify_data


class LocalProtocolError(IkeError):
    """We asked for something impossible: a bug in the caller or our own policy."""

    fault = "local"


class RemoteProtocolError(IkeError):
    """The peer sent something malformed or unacceptable."""

    fault = "remote"


class IntegrityError(RemoteProtocolError):
    """An SK payload failed authentication (RFC 7296 section 3.14, RFC 5282),
    or a message that must be protected could not be authenticated at all.

    Such a message may be forged by anyone on the path, so the caller must drop
    it silently: no notify, no state change (RFC 7296 section 2.21.2).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, notify=None)
