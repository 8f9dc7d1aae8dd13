"""IKEv2 (RFC 7296): sans-IO wire codec, key material and, later, the state machine and driver."""
