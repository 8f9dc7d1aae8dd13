"""Adapters that give each of today's objects the engine's interface (nsg.engine.Subsystem): a name
and ``async set(part) -> Changes``. Each takes its whole part of nsg.compose.DesiredState and is
idempotent; a repeat of the same part is only passed on when the engine forces it (the periodic
resync), which the adapters that can read the kernel back take as "verify and repair"."""

from nsg.subsystems.dataplane import DataplaneSubsystem
from nsg.subsystems.dhcp import DhcpSubsystem
from nsg.subsystems.enforce import GuardSubsystem, PolicySubsystem, PortGuardSubsystem, QosSubsystem
from nsg.subsystems.evpn import EvpnSubsystem
from nsg.subsystems.tunnels import EspEngineSubsystem, IkeSubsystem, TunnelSlot
from nsg.subsystems.workloads import WorkloadsSubsystem

__all__ = ["DataplaneSubsystem", "DhcpSubsystem", "EspEngineSubsystem", "EvpnSubsystem", "GuardSubsystem",
           "IkeSubsystem", "PolicySubsystem", "PortGuardSubsystem", "QosSubsystem", "TunnelSlot", "WorkloadsSubsystem"]
