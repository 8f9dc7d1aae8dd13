"""The gateway's EVPN plane, on the shared BGP library (``bgp``).

``control`` runs one ``bgp.speaker`` per configured peer and turns received routes into
RIB paths; ``rib`` picks the best path per route (RFC 7432 section 15) and yields FDB and
neighbour entries; ``local`` turns what the LAN side learns into type-2 routes to
originate; ``watch`` is the one module here that reads the kernel's neighbour tables.
"""
