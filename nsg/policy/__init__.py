"""Firewall and QoS policy: pure renderers (nft, tc) and the adapters that apply them."""
