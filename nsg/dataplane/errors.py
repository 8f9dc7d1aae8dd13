"""Dataplane errors."""


class DataplaneError(RuntimeError):
    """The kernel refused an operation (a local fault: nothing remote is involved)."""

    def __init__(self, op: object, reason: str, errno: int | None = None):
        self.op = op
        self.reason = reason
        self.errno = errno
        super().__init__(f"kernel refused '{op}': {reason}" + (f" (errno {errno})" if errno else ""))
        # apply_many: which of the operations handed over did take effect (None: those before ``op``)
        self.applied: frozenset[int] | None = None
