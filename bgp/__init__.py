"""BGP-4 with EVPN, the library the gateway (``nsg.evpn``) and the controller's route reflector share.

``codec`` frames and parses BGP messages (RFC 4271) and path attributes, classifying
UPDATE errors per RFC 7606; ``attributes`` and ``capabilities`` hold the path
attributes and OPEN capabilities; ``evpn_nlri`` the EVPN NLRI (RFC 7432, RFC 8365,
RFC 9136), route distinguishers, extended communities and the PMSI tunnel attribute.
``constants`` keeps RFC code points apart from tuning values; ``errors`` says whose
fault a failure was and which NOTIFICATION it maps to. ``fsm`` is the session state
table (sans-IO) and ``speaker`` its one asyncio driver.

Never imports nsg, controller or lab (tests/unit/test_import_rules.py).
"""
