"""BGP-4 with EVPN: the wire codec (sans-IO), and later the FSM, speaker and RIB.

``codec`` frames and parses BGP messages (RFC 4271) and path attributes, classifying
UPDATE errors per RFC 7606; ``evpn_nlri`` holds the EVPN NLRI (RFC 7432, RFC 8365,
RFC 9136), route distinguishers, extended communities and the PMSI tunnel attribute.
``constants`` keeps RFC code points apart from tuning values; ``errors`` says whose
fault a failure was and which NOTIFICATION it maps to.
"""
