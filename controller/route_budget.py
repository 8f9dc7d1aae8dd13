"""How many EVPN routes a gateway can announce honestly: its route budget. Pure.

A gateway announces, per tenant subnet, one type-3 route, and per host on that subnet one MAC route
and a MAC+IP route per address the host uses; per configured prefix one type-5 route. The hosts are
bounded by LAN port security (nsg/policy/port_guard.py): a guarded LAN port holds at most
``max_macs`` source MACs, and the port of each of the box's own workloads (a container's veth, a VM's
tap) at most WORKLOAD_MAX_MACS. So the
controller knows, from the config it renders, the most a gateway can have to say; anything beyond is
a flood (a rooted box, or a reflector gone wrong).

The budget is used twice, so that both sides refuse a flood at the same point:

- the route reflector's per-client limit (controller/rr_policy.py ``view_from_configs``: the client's
  ``max_routes``): the excess is refused, a flood that persists ends the session;
- every other gateway's per-site limit for that site (controller/mesh.py renders
  ``evpn.remote_limits``): a gateway defends itself if the reflector does not.

A subnet with port security off (``port_security: null``) has no bound on its hosts: the gateway then
has no budget (None) and the default limits apply (the reflector's ``--max-routes``, the gateways'
``evpn.max_routes_per_site``).

A budget for 500 branches: a branch with two subnets, three guarded LAN ports each at 256 MACs and a
container per subnet announces at most 2 x (1 + 3 x (3 x 256 + 4)) + 64 = 4,698 routes."""

from __future__ import annotations

from nsg.model import GatewayConfig
from nsg.model.config import WORKLOAD_MAX_MACS

ROUTES_PER_HOST = 3  # its MAC route, a MAC+IP route for its address and one more (a second address, a move's overlap)
MARGIN = 64  # headroom: a host that changes address, a workload that is replaced while the old one ages out


def route_budget(cfg: GatewayConfig) -> int | None:
    """The most routes ``cfg``'s gateway can announce, or None when nothing bounds its LAN."""
    if cfg.evpn is None:
        return None
    workloads: dict[str, int] = {}
    for w in (*cfg.apps, *cfg.vms):
        workloads[w.subnet] = workloads.get(w.subnet, 0) + 1
    total = len(cfg.evpn.prefixes) + MARGIN
    for s in cfg.subnets:
        if s.port_security is None:
            return None
        ps = s.port_security
        hosts = ps.max_macs * len(s.ports) + min(WORKLOAD_MAX_MACS, ps.max_macs) * workloads.get(s.name, 0)
        total += 1 + ROUTES_PER_HOST * hosts
    return total
