"""What `nsg run` checks before it starts a config, in one place: `nsg check-config` runs the very
same checks, so a file it passes is one the daemon takes.

Two stages, both local input's fault when they fail (ConfigError, naming the field or file):
the config document (the pydantic model, nsg.model) and the credentials it names (the IPsec
key, certificate and CA files or the box's LDevID, and the CRL: nsg.tunnels.load_credentials,
which also refuses a key file others may read).
"""

from __future__ import annotations

from pathlib import Path

from nsg.model import ConfigError, GatewayConfig, load_config

IDENTITY_DIR = "identity"  # under the state directory: IDevID, LDevID, the controller's CA


def identity_dir(state_dir: Path) -> Path:
    return state_dir / IDENTITY_DIR


def check_credentials(cfg: GatewayConfig, state_dir: Path, source: str = "config") -> None:
    """Raises ConfigError when the credentials the config names cannot be used."""
    if cfg.ipsec is None:
        return
    from nsg.tunnels import TunnelConfigError, load_credentials

    try:
        load_credentials(cfg.ipsec, identity_dir(state_dir))
    except TunnelConfigError as exc:
        raise ConfigError(source, [str(exc)]) from None


def check_config_file(path: Path, state_dir: Path) -> GatewayConfig:
    """The config at ``path`` as `nsg run --config path --state-dir state_dir` would take it."""
    cfg = load_config(path)
    check_credentials(cfg, state_dir, str(path))
    return cfg


__all__ = ["check_config_file", "check_credentials", "identity_dir"]
