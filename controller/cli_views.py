"""What `nsg-controller` shows an operator: tables, key/value sections, times a person reads, and the
gateway health views. Pure: documents of the admin API in, lines of text out.

Much of what is shown came from a gateway (app names and errors, counter names, states): a gateway is
not trusted to write to the operator's terminal. Every piece of text goes through ``safe`` on its way
out, so an escape sequence, a carriage return or a bidi override arrives as visible ``\\x1b``-style
text, never raw (controller/safe_text.py). JSON output is safe as it is (``json.dumps`` escapes every
control and non-ASCII character).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from controller.safe_text import safe  # also what callers import from here


def to_json(doc: object) -> str:
    """For scripts (``--json``): indented JSON, ASCII only, so nothing in it is a terminal control."""
    return json.dumps(doc, indent=2, ensure_ascii=True)


def table(rows: Iterable[Sequence[object]], header: Sequence[str] | None = None, indent: str = "") -> list[str]:
    """Columns padded to their widest cell, every cell made ``safe``."""
    cells = [[safe(c) for c in r] for r in ([header] if header else []) + list(rows)]
    if not cells:
        return []
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return [(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))).rstrip() for r in cells]


def yes_no(value: object) -> str:
    return "-" if value is None else "yes" if value else "no"


def iso(ts: float) -> str:
    """Unix time as ISO 8601 UTC, to the second."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(ts: float, now: float) -> str:
    """How long before ``now`` (or after it: a gateway's clock may run ahead), in the largest unit."""
    delta = abs(now - ts)
    if delta < 120:
        text = f"{int(delta)} s"
    elif delta < 2 * 3600:
        text = f"{int(delta // 60)} min"
    elif delta < 2 * 86400:
        text = f"{int(delta // 3600)} h"
    else:
        text = f"{int(delta // 86400)} d"
    return f"in {text}" if ts > now else f"{text} ago"


def when(ts: object, now: float) -> str:
    """A Unix time a gateway reported, for people: ``2030-01-01T12:00:00Z (12 s ago)``."""
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return safe(ts) if ts is not None else "never"
    try:
        return f"{iso(ts)} ({ago(ts, now)})"
    except (OverflowError, OSError, ValueError):  # out of datetime's range: show what came
        return safe(ts)


# -- gateway health ------------------------------------------------------------------------------


def _generation(n: object) -> str:
    return "none" if n is None else safe(n)


def _not_running(what: str, live: Mapping[str, Mapping[str, Any]]) -> list[str]:
    down = [f"{name} ({live[name].get('state') or 'unknown'})" for name in sorted(live)
            if live[name].get("state") != "running"]
    return [f"{what} not running: {', '.join(down)}"] if down else []


def problems(status: Mapping[str, Any]) -> list[str]:
    """Why a gateway (a GatewayStatus document) is not OK; empty when it is."""
    why = []
    connected = status.get("connected")
    if not connected:
        why.append("channel down")
    if status.get("rolled_back_generation") is not None:
        why.append(f"generation {status['rolled_back_generation']} rolled back: {status.get('rollback_reason')}")
    elif status.get("last_apply_error"):
        why.append(f"last apply failed: {status['last_apply_error']}")
    if status.get("waiting"):
        why.append(f"degraded, waiting for: {', '.join(status['waiting'])}")
    sent, applied = status.get("sent_generation"), status.get("applied_generation")
    if connected and sent != applied and status.get("rolled_back_generation") != sent:
        why.append(f"generation {_generation(sent)} sent, {_generation(applied)} applied")
    if connected and sent is not None and sent != status.get("generation"):
        why.append(f"generation {_generation(status.get('generation'))} not sent yet")
    why += _not_running("apps", status.get("apps") or {})
    why += _not_running("VMs", status.get("vms") or {})
    agent = (status.get("upgrade") or {}).get("agent") or {}
    if agent.get("action") == "held":
        why.append(f"upgrade to {agent.get('target')} held: {agent.get('detail')}")
    return why


def health_line(status: Mapping[str, Any]) -> str:
    why = problems(status)
    return safe(f"{status.get('name')}: " + ("OK" if not why else "NOT OK: " + "; ".join(why)))


def _section(title: str, lines: list[str], empty: str = "none reported") -> list[str]:
    return [title, *(lines or [f"  {empty}"])]


def status_view(status: Mapping[str, Any], now: float) -> list[str]:
    """`nsg-controller gateway status`: the health line, then what the gateway last reported."""
    apps: Mapping[str, Mapping[str, Any]] = status.get("apps") or {}
    vms: Mapping[str, Mapping[str, Any]] = status.get("vms") or {}
    last_error = status.get("last_apply_error")
    lines = [health_line(status)]
    lines += _section("Channel", table([
        ["connected", yes_no(status.get("connected"))],
        ["telemetry", when(status.get("telemetry_at"), now)]], indent="  "))
    lines += _section("Configuration", table([
        ["controller has", f"generation {_generation(status.get('generation'))}"],
        ["sent", _generation(status.get("sent_generation"))],
        ["applied", _generation(status.get("applied_generation"))],
        ["last apply", "ok" if not last_error else f"failed: {last_error}"]], indent="  "))

    def mb(v: object) -> str:
        return f"{v:.1f}" if isinstance(v, int | float) and not isinstance(v, bool) else safe(v)

    lines += _section("Apps", table(
        [[n, a.get("state"), yes_no(a.get("attached")), a.get("address"), a.get("restarts"),
          mb(a.get("memory_mb")), mb(a.get("cpu_percent")), a.get("error") or ""] for n, a in sorted(apps.items())],
        ["NAME", "STATE", "ATTACHED", "ADDRESS", "RESTARTS", "MEM MB", "CPU %", "ERROR"], indent="  ")
        if apps else [])
    lines += _section("VMs", table(
        [[n, v.get("state"), yes_no(v.get("attached")), v.get("address"), v.get("restarts"), v.get("error") or ""]
         for n, v in sorted(vms.items())],
        ["NAME", "STATE", "ATTACHED", "ADDRESS", "RESTARTS", "ERROR"], indent="  ") if vms else [])
    counters = {k: v for k, v in (status.get("counters") or {}).items() if not k.startswith(("app.", "vm."))}
    lines += _section("Counters", table([[k, counters[k]] for k in sorted(counters)], indent="  "))
    lines += _section("Upgrade", _upgrade_rows(status, now), empty="not reported")
    security = status.get("security") or {}
    seen = security.get("counters") or {}
    lines += _section("Security events", table(
        [[reason, seen[reason]] for reason in sorted(seen)], ["REASON", "COUNT"], indent="  ") if seen else [],
        empty="none")
    return lines


def _upgrade_rows(status: Mapping[str, Any], now: float) -> list[str]:
    from nsg.model.upgrade import UpgradeState

    if not status.get("upgrade"):
        return [f"  target {status['upgrade_target']}"] if status.get("upgrade_target") else []
    st = UpgradeState.model_validate(status["upgrade"])
    if not st.appliance:
        return table([["target", status.get("upgrade_target") or "none"], ["box", st.detail]], indent="  ")
    return table([
        ["target", status.get("upgrade_target") or "none"],
        ["running", f"{st.running_version} (slot {st.booted_slot})"],
        ["committed", f"{st.committed_version} (slot {st.committed_slot})"],
        ["last attempt", f"{st.attempt_line() or '-'}: {st.outcome() or '-'}"],
        ["now", st.agent.action + (f": {st.agent.detail}" if st.agent.detail else "")],
        ["reported", when(status.get("upgrade_at"), now)]], indent="  ")


def security_view(doc: Mapping[str, Any], now: float) -> list[str]:
    """`nsg-controller security events`: counts per gateway and reason, then the events, oldest first."""
    counters: Mapping[str, Mapping[str, int]] = doc.get("counters") or {}
    rows = [[gw, reason, counters[gw][reason]] for gw in sorted(counters) for reason in sorted(counters[gw])]
    lines = _section("Counts", table(rows, ["GATEWAY", "REASON", "COUNT"], indent="  ") if rows else [], empty="none")
    events = doc.get("events") or []
    lines += _section("Events", table(
        [[when(e.get("ts"), now), e.get("gateway"), e.get("source"), e.get("reason"), e.get("count"),
          e.get("message")] for e in events],
        ["WHEN", "GATEWAY", "SOURCE", "REASON", "COUNT", "MESSAGE"], indent="  ") if events else [], empty="none")
    return lines


def gateway_view(gateway: Mapping[str, Any], status: Mapping[str, Any]) -> list[str]:
    """`nsg-controller gateway show`: the health line, then the gateway as the controller keeps it."""
    lines = [health_line(status)]
    lines += _section("Gateway", table([
        ["enterprise", gateway.get("enterprise")],
        ["role", gateway.get("role")],
        ["serial", gateway.get("serial")],
        ["system IP", gateway.get("system_ip")],
        ["behind NAT", yes_no(gateway.get("behind_nat"))],
        ["activation code", "set" if gateway.get("activation_code_set") else "none"],
        ["created", gateway.get("created")]], indent="  "))
    lines += _section("Uplinks", table(
        [[u.get("name"), u.get("interface"), u.get("mode"), u.get("address"), u.get("gateway"), u.get("public"),
          u.get("mtu"), u.get("egress_kbit"), u.get("ingress_kbit")] for u in gateway.get("uplinks") or []],
        ["NAME", "INTERFACE", "MODE", "ADDRESS", "GATEWAY", "PUBLIC", "MTU", "EGRESS KBIT", "INGRESS KBIT"],
        indent="  "))
    ports: Mapping[str, Sequence[str]] = gateway.get("ports") or {}
    lines += _section("Ports", table([[s, ", ".join(ports[s])] for s in ports], ["SUBNET", "INTERFACES"],
                                     indent="  ") if ports else [], empty="none")
    return lines


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def upgrade_view(doc: Mapping[str, Any], now: float) -> list[str]:
    """`nsg-controller upgrade status`: the enterprise's profile, then per gateway what it runs and commits,
    its slot, the target, the last attempt and its outcome, and what the box does about the target now."""
    from nsg.model.upgrade import UpgradeState

    p = doc.get("profile")
    lines = [f"enterprise {doc.get('enterprise')}: " + (
        "no upgrade profile" if not p else
        f"upgrade to {p.get('version')}" + (f", commit within {p['commit_after_s']:g} s"
                                              if p.get("commit_after_s") is not None else "")
        + (f", retried {p.get('retry')} times" if p.get("retry") else ""))]
    rows = []
    for g in doc.get("gateways") or []:
        target = g.get("target") or "-"
        if g.get("source") == "gateway":
            target += " (own)"
        st = UpgradeState.model_validate(g["state"]) if g.get("state") else None
        if st is None:
            rows.append([g.get("name"), target, "not reported", "", "", "", "", ""])
            continue
        if not st.appliance:
            rows.append([g.get("name"), target, "-", "-", "-", "", "", _cut(st.detail or st.agent.action)])
            continue
        slot = f"{st.booted_slot}" + (" (trial)" if st.booted_slot != st.committed_slot else "") + (
            f" ({st.armed_slot} armed)" if st.armed_slot else "")
        agent = st.agent.action + (f": {st.agent.detail}" if st.agent.detail and st.agent.action == "held" else "")
        rows.append([g.get("name"), target, st.running_version or "?", st.committed_version or "?", slot,
                     st.attempt_line() or "-", _cut(st.outcome() or "-"), _cut(agent)])
    lines += table(rows, ["GATEWAY", "TARGET", "RUNNING", "COMMITTED", "SLOT", "LAST ATTEMPT", "OUTCOME", "NOW"],
                   indent="  ") if rows else ["  no gateways"]
    reported = [(g.get("name"), g.get("reported_at")) for g in doc.get("gateways") or [] if g.get("reported_at")]
    if reported:
        lines.append("reported: " + ", ".join(f"{n} {ago(t, now)}" for n, t in reported))
    return lines
