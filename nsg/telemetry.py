"""The counters a gateway reports to its controller (wire.Telemetry), from the status of its parts.
Pure: everything is read by the caller (netlink and nft in worker threads) and passed in, typed
(nsg.model.status)."""

from __future__ import annotations

from collections.abc import Mapping

from nsg.model.status import CommitConfirmStatus, GuardStatus, QosStatus, TunnelsStatus

Counters = dict[str, int | float | str | None]


def telemetry_counters(daemon: Mapping[str, int], generation: int, tunnels: TunnelsStatus | None,
                       workloads: Counters, qos: QosStatus | None = None, guard: GuardStatus | None = None,
                       confirm: CommitConfirmStatus | None = None) -> Counters:
    counters: Counters = {f"daemon.{k}": v for k, v in daemon.items()}
    counters["generation"] = generation
    if tunnels is not None and tunnels.backend is not None:
        counters["ike.established"] = sum(1 for p in tunnels.ike if p.ike_sa and p.ike_sa.state == "established")
        counters["ike.peers"] = len(tunnels.ike)
        for k, v in tunnels.engine.items():
            counters[f"esp.{k}"] = v
        for part in (tunnels.ike_manager, tunnels.ike_driver):  # refusals by reason, send errors by errno
            for k, v in part.items():
                counters[f"ike.{k}"] = v
    counters |= workloads  # each app's and VM's state reaches the controller
    if qos:  # per shaped device and class: bytes and drops (at most 16 x 2 x 8 x 2)
        for dev, per in qos.classes.items():
            for name, st in per.items():
                counters[f"qos.{dev}.{name}.bytes"] = st.bytes
                counters[f"qos.{dev}.{name}.drops"] = st.drops
    if guard:  # attack traffic the input guard dropped: something to alert on
        counters["guard.overlay_protected"] = int(guard.overlay_protected)
        for name, c in guard.dropped.items():
            counters[f"{name}.dropped_packets"] = c.packets
    if confirm:
        counters["confirm.trials"] = confirm.trials
        counters["confirm.confirmed"] = confirm.confirmed
        counters["confirm.rolled_back"] = confirm.rolled_back
    return counters
