"""Protocol constants from the IPsec RFCs (tuning constants live elsewhere).

Sizes in octets. Used for framing and for the overhead budget the gateway
subtracts from the WAN MTU before it sets tenant MTUs.
"""

# RFC 4303 section 2: SPI (4) + sequence number (4) in front of the payload.
ESP_HEADER_LEN = 8
# RFC 4303 section 2.4-2.6: pad length (1) + next header (1) after the padding.
ESP_TRAILER_LEN = 2
# RFC 4303 section 2.4: the ciphertext (payload + padding + trailer) ends on a
# 4-octet boundary.
ESP_ALIGN = 4

# RFC 4106 section 3.1: AES-GCM carries an explicit 8-octet IV in every packet;
# section 6: the ICV is 16 octets (the only ICV size IKEv2 negotiates for
# ENCR_AES_GCM_16).
AES_GCM_IV_LEN = 8
AES_GCM_ICV_LEN = 16

# RFC 3948 section 2.1: ESP inside UDP, destination port 4500.
NATT_PORT = 4500
IKE_PORT = 500
UDP_HEADER_LEN = 8
IPV4_HEADER_LEN = 20

# IANA protocol numbers.
IPPROTO_IPIP = 4
IPPROTO_UDP = 17
IPPROTO_ESP = 50


def esp_udp_tunnel_max_inner(outer_mtu: int) -> int:
    """Largest inner IPv4 packet that fits one ESP-in-UDP (RFC 3948) tunnel-mode
    packet of at most ``outer_mtu`` octets with AES-GCM (RFC 4106).

    The ciphertext holds inner packet + trailer, rounded up to ESP_ALIGN.
    """
    room = outer_mtu - IPV4_HEADER_LEN - UDP_HEADER_LEN - ESP_HEADER_LEN - AES_GCM_IV_LEN - AES_GCM_ICV_LEN
    room -= room % ESP_ALIGN
    return room - ESP_TRAILER_LEN
