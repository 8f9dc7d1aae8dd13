"""Desired state of a gateway: typed, validated, frozen."""

from nsg.model.config import (
    SCHEMA_VERSION,
    ConfigError,
    GatewayConfig,
    Peer,
    Subnet,
    Uplink,
    load_config,
    parse_config,
)

__all__ = [
    "SCHEMA_VERSION",
    "ConfigError",
    "GatewayConfig",
    "Peer",
    "Subnet",
    "Uplink",
    "load_config",
    "parse_config",
]
