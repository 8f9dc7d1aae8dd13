"""The resolver subsystem (nsg.compose.ResolverPart): writes the box's resolv.conf (nsg/resolver.py)
where `nsg run --resolv-conf` said, or nothing at all when it said nowhere. A file it cannot write is
the box's fault (a local error), and the engine puts the parts it set in this pass back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nsg import resolver
from nsg.compose import ResolverPart
from nsg.engine import NO_CHANGES, Changes, SubsystemError


class ResolverSubsystem:
    name = "resolver"

    def __init__(self, path: Path | None):
        self.path = path

    async def set(self, part: ResolverPart) -> Changes:
        if self.path is None:
            return NO_CHANGES
        text = resolver.render(resolver.Resolver(part.nameservers, part.search))
        try:
            written = await asyncio.to_thread(resolver.write, self.path, text)
        except OSError as exc:
            raise SubsystemError(self.name, f"cannot write {self.path}: {exc.strerror or exc}") from None
        if not written:
            return NO_CHANGES
        return Changes((f"resolv.conf: {', '.join(part.nameservers) or 'no name server'}"
                        + (f" search {' '.join(part.search)}" if part.search else ""),))
