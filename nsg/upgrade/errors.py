"""Why an upgrade was refused or failed, and whose fault that was.

Every error carries a short stable ``code`` (counted per box in the upgrade record, so the controller
sees e.g. ``bad-signature: 3`` across a fleet) and a ``fault``:

- ``bundle``: the file is not a valid bundle from our release keys (corrupt, tampered, truncated);
- ``policy``: a valid bundle that this box must not install (another model, a downgrade);
- ``box``: something local is wrong (no release keys in the image, a broken GRUB env, no slot device);
- ``server``: fetching the bundle failed (TLS, HTTP status, the connection);
- ``operator``: the request itself (an http:// URL, a negative window).
"""

from __future__ import annotations

from typing import ClassVar


class UpgradeError(Exception):
    fault: ClassVar[str] = "box"

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class BundleRefused(UpgradeError):
    """The bundle itself is bad: refused before anything on the box changes."""

    fault = "bundle"


class PolicyRefused(UpgradeError):
    """A genuine bundle, but not for this box or not allowed from this version."""

    fault = "policy"


class BoxError(UpgradeError):
    """The box cannot do it (local state or configuration); the bundle may be fine."""

    fault = "box"


class DownloadError(UpgradeError):
    """The bundle could not be fetched (the server, the network, TLS)."""

    fault = "server"


class RequestRefused(UpgradeError):
    """What was asked cannot be done as asked (an http:// URL, a negative window)."""

    fault = "operator"
