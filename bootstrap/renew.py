"""Keep the LDevID fresh: re-enroll over EST (RFC 7030 4.2.2) at 2/3 of its lifetime, with a new key,
authenticated by the current LDevID. The channel picks the new certificate up on its next connect."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable

from bootstrap import est
from bootstrap.identity import FileIdentityStore, IdentityError

log = logging.getLogger("bootstrap.renew")

Clock = Callable[[], datetime.datetime]
Sleep = Callable[[float], Awaitable[None]]


async def keep_enrolled(identity: FileIdentityStore, est_url: str, *, clock: Clock | None = None,
                        sleep: Sleep = asyncio.sleep, retry_s: float = 60.0, max_nap_s: float = 3600.0,
                        on_renewed: Callable[[], None] | None = None) -> None:
    """``on_renewed``: called once the new certificate and key are on disk (the tunnels pick them up)."""
    clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
    cafile = identity.directory / "controller-ca.pem"
    while True:
        current = identity.ldevid()
        if current is None:
            raise IdentityError("no LDevID to renew: the gateway is not bootstrapped")
        wait = (est.renew_at(current) - clock()).total_seconds()
        if wait > 0:
            await sleep(min(wait, max_nap_s))  # wake now and then: clocks jump, certificates get replaced
            continue
        try:
            key = est.new_key()
            issued = await est.simple_reenroll(est_url, key, current,
                                               ssl_context=identity.tls_context("ldevid", cafile))
        except est.EstError as exc:
            log.warning("LDevID renewal failed, retrying", extra={"fields": {"error": str(exc)}})
            await sleep(retry_s)
            continue
        identity.store_ldevid(issued, key)
        log.info("LDevID renewed", extra={"fields": {"not_after": issued.not_valid_after_utc.isoformat()}})
        if on_renewed is not None:
            on_renewed()
