"""The gateway's EVPN plane, on the shared BGP library (``bgp``).

``routes`` is the pure core: what peers sent (``received``: UPDATE -> RIB paths, unusable routes
refused, per-peer and per-site limits, type-5 only as ``evpn.remote_prefixes`` allows), what we
originate (``originate``: type-3/type-5, type-2 per local MAC with its mobility sequence, the RFC
7432 section 15 contest), duplicate-MAC detection (``mobility``), graceful-restart stale paths; every
input (with the time as an argument) returns ``effects`` (UPDATEs to send, timers to start or
cancel, alerts, whether the kernel view changed). ``install`` keeps what the kernel gets (FDB,
neighbour and prefix entries; the MAC+IP rules) up to date input by input. ``control`` is the
asyncio driver: one ``bgp.speaker`` per configured peer, the timers, the clock. ``rib`` keeps every
path and picks the best per route; ``local`` turns what the LAN side learns into type-2 routes to
originate; ``watch`` is the one module here that reads the kernel's neighbour tables.
"""
