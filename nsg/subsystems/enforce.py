"""The guard, policy and QoS subsystems: nsg.policy.enforce.Enforcement's three parts."""

from __future__ import annotations

from nsg.compose import PolicyPart, QosPart
from nsg.engine import NO_CHANGES, Changes, SubsystemError
from nsg.policy.enforce import Enforcement, EnforcementError
from nsg.policy.guard import Guard
from nsg.policy.port_guard import PortGuard


class GuardSubsystem:
    """The box's input guard. Set again with the same part (a forced resync): verify the table is
    still in the kernel and put it back if not."""

    name = "guard"

    def __init__(self, enforce: Enforcement):
        self.enforce = enforce

    def unchanged(self) -> None:
        self.enforce.count_noop(self.name)

    async def set(self, part: Guard) -> Changes:
        try:
            changed = await self.enforce.set_guard(part, verify=part == self.enforce.guard)
        except EnforcementError as exc:
            raise SubsystemError(self.name, str(exc)) from None
        return Changes(("apply input guard",)) if changed else NO_CHANGES


class PortGuardSubsystem:
    """LAN port MAC limits and the overlay frame guard (table bridge nsg_port). Set again with the same
    part (a forced resync): the table is verified and put back if it went missing."""

    name = "port_guard"

    def __init__(self, enforce: Enforcement):
        self.enforce = enforce

    def unchanged(self) -> None:
        self.enforce.port_guard.state.noop += 1

    async def set(self, part: PortGuard) -> Changes:
        try:
            changed = await self.enforce.set_port_guard(part, verify=part == self.enforce.port_guard.want)
        except EnforcementError as exc:
            raise SubsystemError(self.name, str(exc)) from None
        return Changes(("apply port guard",)) if changed else NO_CHANGES


class PolicySubsystem:
    name = "policy"

    def __init__(self, enforce: Enforcement):
        self.enforce = enforce
        self._last: PolicyPart | None = None

    def unchanged(self) -> None:
        self.enforce.count_noop(self.name)

    async def set(self, part: PolicyPart) -> Changes:
        try:
            changed = await self.enforce.set_policy(part.config, dict(part.uplinks), verify=part == self._last)
        except EnforcementError as exc:
            raise SubsystemError(self.name, str(exc)) from None
        self._last = part
        if not changed:
            return NO_CHANGES
        return Changes(("apply policy",) if part.config is not None else ("remove policy",))


class QosSubsystem:
    name = "qos"

    def __init__(self, enforce: Enforcement):
        self.enforce = enforce

    def unchanged(self) -> None:
        self.enforce.count_noop(self.name)

    async def set(self, part: QosPart) -> Changes:
        try:
            changed = await self.enforce.set_qos(part.plan)  # TcQos.apply reads the kernel back itself
        except EnforcementError as exc:
            raise SubsystemError(self.name, str(exc)) from None
        if not changed:
            return NO_CHANGES
        return Changes(("apply qos",) if part.plan is not None else ("remove qos",))
