"""What `nsg run` checks before it starts a config, in one place: `nsg check-config` runs the very
same checks, so a file it passes is one the daemon takes.

Two stages, both local input's fault when they fail (ConfigError, naming the field or file):
the config document (the pydantic model, nsg.model) and the credentials it names (the IPsec
key, certificate and CA files or the box's LDevID, and the CRL: nsg.tunnels.load_credentials,
which also refuses a key file others may read).

The daemon keeps what load_credentials returns with the config it takes (and loads again only for
another config or after an LDevID renewal); the tunnels use what they are given.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nsg.model import ConfigError, GatewayConfig, load_config

if TYPE_CHECKING:
    from nsg.tunnels import Credentials

IDENTITY_DIR = "identity"  # under the state directory: IDevID, LDevID, the controller's CA


def identity_dir(state_dir: Path) -> Path:
    return state_dir / IDENTITY_DIR


def load_credentials(cfg: GatewayConfig, state_dir: Path, source: str = "config",
                     epoch: int = 0) -> Credentials | None:
    """The IPsec credentials ``cfg`` names, loaded (None without an ipsec section); ``epoch``: the
    LDevID renewals so far. Raises ConfigError when they cannot be used."""
    if cfg.ipsec is None:
        return None
    from nsg.tunnels import TunnelConfigError
    from nsg.tunnels import load_credentials as load

    try:
        return load(cfg.ipsec, identity_dir(state_dir), epoch)
    except TunnelConfigError as exc:
        raise ConfigError(source, [str(exc)]) from None


def check_credentials(cfg: GatewayConfig, state_dir: Path, source: str = "config") -> None:
    """Raises ConfigError when the credentials the config names cannot be used."""
    load_credentials(cfg, state_dir, source)


def check_config_file(path: Path, state_dir: Path) -> GatewayConfig:
    """The config at ``path`` as `nsg run --config path --state-dir state_dir` would take it."""
    cfg = load_config(path)
    check_credentials(cfg, state_dir, str(path))
    return cfg


__all__ = ["check_config_file", "check_credentials", "identity_dir", "load_credentials"]
