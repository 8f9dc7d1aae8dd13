"""Tenant MTU: what is left of the WAN MTU after ESP-in-UDP and VXLAN.

The budget always reserves the ESP overhead, so a tenant's MTU does not change
when encryption comes up or goes down. Nothing relies on fragmentation.
"""

from ipsec.constants import esp_udp_tunnel_max_inner

# RFC 7348 section 5: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
VXLAN_OVERHEAD = 50
MIN_TENANT_MTU = 1280


def tenant_mtu(wan_mtu: int) -> int:
    mtu = esp_udp_tunnel_max_inner(wan_mtu) - VXLAN_OVERHEAD
    if mtu < MIN_TENANT_MTU:
        raise ValueError(f"WAN MTU {wan_mtu} leaves a tenant MTU of {mtu}, below {MIN_TENANT_MTU}")
    return mtu
