"""IKEv2 (RFC 7296): sans-IO wire codec, key material, the IKE SA state machine and its exchanges, the
manager of peerings, and the asyncio driver that does the I/O."""
