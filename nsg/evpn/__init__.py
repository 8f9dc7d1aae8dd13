"""The gateway's EVPN plane, on the shared BGP library (``bgp``).

``routes`` is the pure core: what peers sent (``received``: UPDATE -> RIB paths, unusable routes
refused), what we originate (``originate``: type-3/type-5, type-2 per local MAC with its mobility
sequence, the RFC 7432 section 15 contest), graceful-restart stale paths; every input returns
``effects`` (UPDATEs to send, stale timers to start or cancel, whether the kernel view changed).
``control`` is its asyncio driver: one ``bgp.speaker`` per configured peer and the timers. ``rib``
picks the best path per route and yields FDB and neighbour entries; ``local`` turns what the LAN
side learns into type-2 routes to originate; ``watch`` is the one module here that reads the
kernel's neighbour tables.
"""
