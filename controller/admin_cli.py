"""`nsg-controller` commands for operators: ``serve`` the admin API, manage ``token``s on the
database file, ``login`` (keep a token, 0600), and ``enterprise``/``subnet``/``gateway``... commands
that talk to a running controller over HTTP with a bearer token (controller/cli_auth.py: where the
token and URL come from; never from the command line). What they print: controller/cli_views.py.

controller/cli.py hooks these in with ``add_subcommands(sub)`` and ``dispatch(args)``;
``python -m controller.admin_cli`` runs them on their own. The ``image``, ``app`` and ``vm`` groups
live in admin_workloads.py, ``bundle`` and ``upgrade`` in admin_upgrades.py; the helpers every group uses
(API client, printing) in admin_common.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from controller import cli_auth
from controller.admin_common import listing, make_client, print_json, print_lines, print_table, q
from controller.admin_local import login_command, serve_command, token_command
from controller.admin_upgrades import add_bundle_commands, add_upgrade_commands
from controller.admin_workloads import add_app_commands, add_image_commands, add_vm_commands
from controller.api_client import Client, CliError, api_error  # noqa: F401 -- Client: tests patch admin_cli.Client
from controller.cli_views import gateway_view, safe, security_view, status_view
from controller.store import StoreError

COMMANDS = ("serve", "token", "login", "enterprise", "subnet", "gateway", "image", "app", "vm", "policy", "qos",
            "security", "bundle", "upgrade")
DEFAULT_URL = cli_auth.DEFAULT_URL
_api_error = api_error  # the name tests and older callers know


class SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser: an argument it does not know is its error, shown with its own usage.
    (argparse hands unknown arguments up to the top-level parser, whose usage helps nobody.)"""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        ns, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns, extras


# -- argument types ------------------------------------------------------------------------------


def _uplink(text: str) -> dict[str, Any]:
    """``name=wan0,interface=eth0,mode=static,address=198.18.1.2/24,gateway=198.18.1.1`` or JSON."""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{part!r} is not key=value")
        numeric = key.strip() in ("mtu", "egress_kbit", "ingress_kbit") and value.strip().isdigit()
        if key.strip() == "dns":  # dns=A+B: name servers, in order (a comma separates keys)
            out["dns"] = [a.strip() for a in value.split("+") if a.strip()]
            continue
        out[key.strip()] = int(value) if numeric else value.strip()
    return out


def _port(text: str) -> tuple[str, list[str]]:
    """``SUBNET=IFACE[,IFACE...]``"""
    subnet, sep, ifaces = text.partition("=")
    if not sep or not subnet or not ifaces:
        raise argparse.ArgumentTypeError(f"{text!r} is not SUBNET=IFACE[,IFACE...]")
    return subnet, [i.strip() for i in ifaces.split(",") if i.strip()]


def _read_code(path: str) -> str:
    """The activation code from a file or stdin ('-'): a command line shows in `ps`."""
    try:
        text = sys.stdin.readline() if path == "-" else Path(path).read_text().splitlines()[0]
    except (OSError, IndexError) as exc:
        raise CliError(f"--activation-code-file {path}: cannot read a line: {exc}") from None
    return text.strip()


# -- commands ------------------------------------------------------------------------------------


def _enterprise_create(args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"name": args.name, "transport": args.transport}
    if args.ipsec:
        try:
            body["ipsec"] = json.loads(args.ipsec.read_text())
        except (OSError, ValueError) as exc:
            raise CliError(f"--ipsec {args.ipsec}: {exc}") from None
    print_json(make_client(args).call("POST", "/enterprises", body))


def _enterprise_list(args: argparse.Namespace) -> None:
    ents = listing(args, "/enterprises", "enterprises")
    if ents is None:
        return
    print_table([[e["name"], e["transport"], str(e["generation"])] for e in ents], ["NAME", "TRANSPORT", "GENERATION"])


def _enterprise_show(args: argparse.Namespace) -> None:
    print_json(make_client(args).call("GET", f"/enterprises/{q(args.name)}"))


def _enterprise_delete(args: argparse.Namespace) -> None:
    make_client(args).call("DELETE", f"/enterprises/{q(args.name)}")


PORT_SECURITY_FLAGS = ("max_macs", "learn_rate", "learn_burst")


def _port_security(args: argparse.Namespace, current: dict[str, Any] | None) -> dict[str, Any] | None:
    """The subnet's port security from the flags: --off turns it off; each flag given replaces that
    limit of ``current`` (the subnet's, or the defaults), the others stay."""
    if args.off:
        if any(getattr(args, k) is not None for k in PORT_SECURITY_FLAGS):
            raise CliError("--off takes no --max-macs, --learn-rate or --learn-burst")
        return None
    return {**(current or {}), **{k: getattr(args, k) for k in PORT_SECURITY_FLAGS if getattr(args, k) is not None}}


def _subnet_add(args: argparse.Namespace) -> None:
    body = {"name": args.name, "vni": args.vni, "cidr": args.cidr, "gateway": args.gateway,
            "port_security": _port_security(args, None)}
    print_json(make_client(args).call("POST", f"/enterprises/{q(args.enterprise)}/subnets", body))


def _subnet_port_security(args: argparse.Namespace) -> None:
    client = make_client(args)
    subnets = client.call("GET", f"/enterprises/{q(args.enterprise)}/subnets")["subnets"]
    current = next((s["port_security"] for s in subnets if s["name"] == args.name), None)
    print_json(client.call("PUT", f"/enterprises/{q(args.enterprise)}/subnets/{q(args.name)}/port-security",
                           {"port_security": _port_security(args, current)}))


def _ps_text(ps: dict[str, Any] | None) -> str:
    return "off" if ps is None else f"{ps['max_macs']} MACs, {ps['learn_rate']}/s (burst {ps['learn_burst']})"


def _subnet_list(args: argparse.Namespace) -> None:
    subnets = listing(args, f"/enterprises/{q(args.enterprise)}/subnets", "subnets")
    if subnets is None:
        return
    print_table([[s["name"], str(s["vni"]), s["cidr"], s["gateway"], _ps_text(s.get("port_security"))]
                 for s in subnets], ["NAME", "VNI", "CIDR", "GATEWAY", "PORT SECURITY (per LAN port)"])


def _port_security_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-macs", type=int, metavar="N", help="source MACs one LAN port may hold (default 256)")
    p.add_argument("--learn-rate", type=int, metavar="N", help="new MACs per second per port (default 20)")
    p.add_argument("--learn-burst", type=int, metavar="N", help="new MACs at once before the rate applies (default 40)")
    p.add_argument("--off", action="store_true", help="no LAN port security in this subnet (not recommended)")


def _subnet_delete(args: argparse.Namespace) -> None:
    make_client(args).call("DELETE", f"/enterprises/{q(args.enterprise)}/subnets/{q(args.name)}")


def _gateway_add(args: argparse.Namespace) -> None:
    ports: dict[str, list[str]] = {}
    for subnet, ifaces in args.port:
        ports.setdefault(subnet, []).extend(ifaces)
    body: dict[str, Any] = {"name": args.name, "serial": args.serial, "uplinks": args.uplink, "ports": ports,
                            "behind_nat": args.behind_nat, "role": args.role}
    if args.activation_code_file:
        body["activation_code"] = _read_code(args.activation_code_file)
    print_json(make_client(args).call("POST", f"/enterprises/{q(args.enterprise)}/gateways", body))


def _gateway_set(args: argparse.Namespace) -> None:
    body: dict[str, Any] = {}
    if args.uplink:
        body["uplinks"] = args.uplink
    if args.port:
        ports: dict[str, list[str]] = {}
        for subnet, ifaces in args.port:
            ports.setdefault(subnet, []).extend(ifaces)
        body["ports"] = ports
    if args.serial:
        body["serial"] = args.serial
    if args.behind_nat is not None:
        body["behind_nat"] = args.behind_nat
    if not body:
        raise CliError("gateway set: nothing to change (give --uplink, --port, --serial or --[no-]behind-nat)")
    query = "" if args.confirm_window is None else f"?confirm_s={args.confirm_window:g}"
    print_json(make_client(args).call("PATCH", f"/gateways/{q(args.name)}{query}", body))


def _gateway_list(args: argparse.Namespace) -> None:
    gws = listing(args, f"/enterprises/{q(args.enterprise)}/gateways", "gateways")
    if gws is None:
        return
    rows = [[g["name"], g["role"], g["serial"], g["system_ip"], "yes" if g["behind_nat"] else "no"] for g in gws]
    print_table(rows, ["NAME", "ROLE", "SERIAL", "SYSTEM IP", "BEHIND NAT"])


def _gateway_show(args: argparse.Namespace) -> None:
    client = make_client(args)
    gateway = client.call("GET", f"/gateways/{q(args.name)}")
    if args.json:
        print_json(gateway)
        return
    print_lines(gateway_view(gateway, client.call("GET", f"/gateways/{q(args.name)}/status")))


def _gateway_config(args: argparse.Namespace) -> None:
    print_json(make_client(args).call("GET", f"/gateways/{q(args.name)}/config"))


def _gateway_delete(args: argparse.Namespace) -> None:
    make_client(args).call("DELETE", f"/gateways/{q(args.name)}")


def _gateway_reset_identity(args: argparse.Namespace) -> None:
    doc = make_client(args).call("POST", f"/gateways/{q(args.name)}/reset-identity")
    if args.json:
        print_json(doc)
        return
    gone = ", ".join(doc["revoked"]) or "none held"
    print(safe(f"{doc['name']} (serial {doc['serial']}): LDevIDs revoked: {gone}; "
               "the box may now enroll once with its factory identity"))


def _gateway_status(args: argparse.Namespace) -> None:
    doc = make_client(args).call("GET", f"/gateways/{q(args.name)}/status")
    if args.json:
        print_json(doc)
        return
    print_lines(status_view(doc, time.time()))


def _doc_set(args: argparse.Namespace) -> None:
    try:
        doc = json.loads(args.file.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"{args.file}: {exc}") from None
    print_json(make_client(args).call("PUT", f"/enterprises/{q(args.enterprise)}/{args.cmd}", doc))


def _doc_show(args: argparse.Namespace) -> None:
    print_json(make_client(args).call("GET", f"/enterprises/{q(args.enterprise)}/{args.cmd}"))


def _doc_clear(args: argparse.Namespace) -> None:
    make_client(args).call("DELETE", f"/enterprises/{q(args.enterprise)}/{args.cmd}")


def _policy_counters(args: argparse.Namespace) -> None:
    doc = make_client(args).call("GET", f"/gateways/{q(args.gateway)}/policy/counters")
    if args.json:
        print_json(doc)
        return
    if not doc["counters"]:
        print(safe(f"{args.gateway}: no counters reported yet" + ("" if doc["connected"] else " (not connected)")))
        return
    rows = [[name, c["packets"], c["bytes"]] for name, c in doc["counters"].items()]
    print_table(rows, ["RULE", "PACKETS", "BYTES"])


def _security_events(args: argparse.Namespace) -> None:
    path = "/security-events" + (f"?gateway={q(args.gateway)}" if args.gateway else "")
    doc = make_client(args).call("GET", path)
    if args.json:
        print_json(doc)
        return
    print_lines(security_view(doc, time.time()))


def _reflector_view(args: argparse.Namespace) -> None:
    """What each gateway of the enterprise owns, for `route-reflector --owners FILE`: from the configs
    the controller renders (controller/rr_policy.py). Written whole (0600), or printed."""
    from controller.rr_policy import ViewError, dump_view, view_from_configs
    from nsg.model import ConfigError, parse_config

    client = make_client(args)
    gws = client.call("GET", f"/enterprises/{q(args.enterprise)}/gateways")["gateways"]
    try:
        configs = {g["name"]: parse_config(client.call("GET", f"/gateways/{q(g['name'])}/config"),
                                           source=f"gateway {g['name']}") for g in gws}
        view = view_from_configs(configs)
        text = dump_view(view)
    except (ConfigError, ViewError) as exc:
        raise CliError(f"reflector view of {args.enterprise}: {exc}", 1) from None
    if args.out is None:
        print(text)
        return
    cli_auth.write_private(args.out, text if text.endswith("\n") else text + "\n")
    print(f"{args.out}: {len(view.clients)} gateways with EVPN; the reflector re-reads it when it changes")


# -- argparse ------------------------------------------------------------------------------------


def add_subcommands(sub: Any) -> None:
    """Adds COMMANDS to an argparse subparsers object (``ArgumentParser.add_subparsers()``)."""
    api = argparse.ArgumentParser(add_help=False)
    cli_auth.add_arguments(api)
    js = argparse.ArgumentParser(add_help=False)
    js.add_argument("--json", action="store_true", help="print the API's JSON document (for scripts)")
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", type=Path, required=True, help="the controller's SQLite database")

    def group(name: str, help_: str) -> Any:
        return sub.add_parser(name, help=help_).add_subparsers(dest="action", required=True, metavar="ACTION")

    def leaf(parent: Any, name: str, run: Any, *parents: argparse.ArgumentParser, help_: str) -> Any:
        p = parent.add_parser(name, parents=list(parents), help=help_)
        p.set_defaults(admin_run=run)
        return p

    s = sub.add_parser("serve", parents=[db], help="serve the admin REST API")
    s.add_argument("--listen", default="127.0.0.1:8443", help="loopback ADDRESS:PORT (default 127.0.0.1:8443)")
    s.add_argument("--system-pool", default=None, help="system IP pool of a new database (default 198.19.255.0/24)")
    s.add_argument("--devices", metavar="ADDRESS:PORT",
                   help="also serve gateways (SZTP, EST, channel; TLS) on this address, e.g. 198.18.0.2:8444")
    s.add_argument("--state-dir", type=Path, help="controller CA, owner and TLS keys (with --devices)")
    s.add_argument("--confirm-window", type=float, default=60.0, metavar="SECONDS",
                   help="a gateway undoes a new config unless it still reaches the controller with it within "
                        "this time (commit-confirm; default 60)")
    s.add_argument("--ldevid-lifetime", type=float, default=90 * 86400, metavar="SECONDS",
                   help="validity of the LDevIDs EST issues (default 90 days; gateways renew at 2/3 of it)")
    s.add_argument("--manufacturer-dir", type=Path,
                   help="manufacturer CA whose IDevIDs are accepted and (labs) whose key signs vouchers")
    s.add_argument("--release-keys", type=Path, metavar="DIR",
                   help="release public keys (*.pem): an uploaded upgrade bundle is kept only if one verifies it")
    lim = s.add_argument_group("device site limits (what one box may hold of the controller)")
    lim.add_argument("--site-header-timeout", type=float, metavar="SECONDS",
                     help="TLS handshake and request head must be in within this (default 10)")
    lim.add_argument("--site-idle-timeout", type=float, metavar="SECONDS",
                     help="a connection carrying nothing either way for this long is closed (default 60)")
    lim.add_argument("--site-max-per-identity", type=int, metavar="N",
                     help="connections at once per client certificate (default 8)")
    lim.add_argument("--site-max-per-address", type=int, metavar="N",
                     help="connections at once per source address without a client certificate yet (default 64)")
    lim.add_argument("--site-max-connections", type=int, metavar="N",
                     help="connections on the device site in all (default 4096; kept 256 below the open-files "
                          "limit)")
    lim.add_argument("--channel-send-timeout", type=float, metavar="SECONDS",
                     help="a gateway that does not take a frame within this is closed (slow reader; default 10)")
    s.set_defaults(admin_run=serve_command)

    t = group("token", "admin API tokens, on the database file")
    p = leaf(t, "create", token_command, db, help_="make a token and print it (once)")
    p.add_argument("name")
    p.add_argument("--expires", metavar="WHEN",
                   help="refused after this: a duration (90m, 12h, 30d, 2w) or an ISO 8601 time with zone")
    leaf(t, "list", token_command, db, help_="list token names")
    leaf(t, "revoke", token_command, db, help_="revoke a token").add_argument("name")

    p = sub.add_parser("login", help="keep an admin token (read from stdin) for the commands below, mode 0600")
    p.add_argument("--url", help=f"controller API base to keep (default: ${cli_auth.URL_ENV} or {DEFAULT_URL})")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help=f"where to keep it (default: {cli_auth.default_token_file()})")
    p.set_defaults(admin_run=login_command)

    e = group("enterprise", "enterprises (over the API)")
    p = leaf(e, "create", _enterprise_create, api, help_="create an enterprise")
    p.add_argument("name")
    p.add_argument("--transport", choices=("plain", "esp"), default="plain")
    p.add_argument("--ipsec", type=Path, help="JSON file of IPsec settings (default: each gateway its own LDevID; "
                   "{\"psk\": SECRET}: a key per pair of gateways derived from it)")
    leaf(e, "list", _enterprise_list, api, js, help_="list enterprises")
    leaf(e, "show", _enterprise_show, api, help_="show an enterprise").add_argument("name")
    leaf(e, "delete", _enterprise_delete, api, help_="delete an enterprise").add_argument("name")

    n = group("subnet", "subnets of an enterprise (over the API)")
    p = leaf(n, "add", _subnet_add, api, help_="add a subnet")
    p.add_argument("enterprise")
    p.add_argument("name")
    p.add_argument("--vni", type=int, required=True)
    p.add_argument("--cidr", required=True)
    p.add_argument("--gateway", required=True, help="the subnet's gateway address (on every site's bridge)")
    _port_security_flags(p)
    p = leaf(n, "port-security", _subnet_port_security, api,
             help_="set the LAN port security of a subnet at every site (flags not given stay as they are)")
    p.add_argument("enterprise")
    p.add_argument("name")
    _port_security_flags(p)
    leaf(n, "list", _subnet_list, api, js, help_="list subnets").add_argument("enterprise")
    p = leaf(n, "delete", _subnet_delete, api, help_="delete a subnet")
    p.add_argument("enterprise")
    p.add_argument("name")

    g = group("gateway", "gateways (over the API)")
    p = leaf(g, "add", _gateway_add, api, help_="add a gateway; the controller assigns its system IP")
    p.add_argument("enterprise")
    p.add_argument("name")
    p.add_argument("--serial", required=True)
    p.add_argument("--uplink", type=_uplink, action="append", required=True,
                   help="name=wan0,interface=eth0,mode=static|dhcp[,address=A/P,gateway=G][,public=IP][,mtu=N]"
                        "[,dns=A+B] (name servers)")
    p.add_argument("--port", type=_port, action="append", default=[], help="SUBNET=IFACE[,IFACE...]")
    p.add_argument("--behind-nat", action="store_true")
    p.add_argument("--role", choices=("edge", "hub"), default="edge",
                   help="hub: the overlay end beside the route reflector (no LAN ports, no subnets)")
    p.add_argument("--activation-code-file", help="file whose first line is the activation code ('-': stdin)")
    p = leaf(g, "set", _gateway_set, api, help_="change a gateway's uplinks, LAN ports, serial or NAT flag")
    p.add_argument("name")
    p.add_argument("--uplink", type=_uplink, action="append", default=[],
                   help="replaces all uplinks: name=wan0,interface=eth0,mode=static|dhcp[,address=A/P,gateway=G]...")
    p.add_argument("--port", type=_port, action="append", default=[], help="replaces all LAN ports: SUBNET=IFACE,...")
    p.add_argument("--serial", help="a replacement box: its certificates under the old serial are revoked")
    p.add_argument("--behind-nat", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--confirm-window", type=float, metavar="SECONDS",
                   help="the gateway undoes this change unless it still reaches the controller within this time")
    leaf(g, "list", _gateway_list, api, js, help_="list an enterprise's gateways").add_argument("enterprise")
    leaf(g, "show", _gateway_show, api, js, help_="show a gateway and whether it is OK").add_argument("name")
    leaf(g, "config", _gateway_config, api, help_="print a gateway's rendered config").add_argument("name")
    leaf(g, "delete", _gateway_delete, api, help_="delete a gateway").add_argument("name")
    leaf(g, "reset-identity", _gateway_reset_identity, api, js,
         help_="revoke a box's LDevIDs so that it may enroll once more (its state was wiped, or a spare "
               "with its serial)").add_argument("name")
    leaf(g, "status", _gateway_status, api, js,
         help_="whether it is OK, then what it last reported: channel, generation, apps, counters").add_argument("name")

    add_image_commands(group, leaf, api, js)
    add_app_commands(group, leaf, api, js)

    for doc, what in (("policy", "the enterprise's firewall: tenants, ACLs, groups, breakout"),
                      ("qos", "the enterprise's QoS profile: forwarding classes, DSCP map, limiters (rates: the "
                              "uplinks' egress_kbit/ingress_kbit)")):
        grp = group(doc, f"{what} (over the API)")
        p = leaf(grp, "set", _doc_set, api, help_=f"replace the {doc} with a JSON file's")
        p.add_argument("enterprise")
        p.add_argument("file", type=Path)
        leaf(grp, "show", _doc_show, api, help_=f"show the {doc}").add_argument("enterprise")
        leaf(grp, "clear", _doc_clear, api, help_=f"remove the {doc}").add_argument("enterprise")
        if doc == "policy":
            pol = grp
    p = leaf(pol, "counters", _policy_counters, api, js, help_="per-rule hit counters a gateway reported")
    p.add_argument("gateway")

    sec = group("security", "security events about gateways: from the gateways and the route reflector (over the API)")
    leaf(sec, "events", _security_events, api, js,
         help_="counts per gateway and reason, then the last events").add_argument("gateway", nargs="?")
    p = leaf(sec, "reflector-view", _reflector_view, api,
             help_="what each gateway owns, for the route reflector's --owners file")
    p.add_argument("enterprise")
    p.add_argument("--out", type=Path, help="write it here (0600) instead of printing it")

    add_vm_commands(group, leaf, api, js)
    add_bundle_commands(group, leaf, api, js)
    add_upgrade_commands(group, leaf, api, js)

def dispatch(args: argparse.Namespace) -> int:
    """Runs a command parsed by add_subcommands' parsers; returns the exit status."""
    try:
        args.admin_run(args)
    except CliError as exc:  # the controller's messages may carry what a gateway or a client sent
        print(f"nsg-controller: {safe(str(exc))}", file=sys.stderr)
        return exc.status
    except StoreError as exc:
        print(safe(f"nsg-controller: {exc.field}: {exc.message} [{exc.kind}]"), file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nsg-controller", description="nsg reference controller: admin commands")
    add_subcommands(parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=SubcommandParser))
    return dispatch(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
