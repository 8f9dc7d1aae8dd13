"""`nsg-controller` commands for operators: ``serve`` the admin API, manage ``token``s on the
database file, ``login`` (keep a token, 0600), and ``enterprise``/``subnet``/``gateway``... commands
that talk to a running controller over HTTP with a bearer token (controller/cli_auth.py: where the
token and URL come from; never from the command line). What they print: controller/cli_views.py.

controller/cli.py hooks these in with ``add_subcommands(sub)`` and ``dispatch(args)``;
``python -m controller.admin_cli`` runs them on their own.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from controller import cli_auth
from controller.admin_local import login_command, serve_command, token_command
from controller.api_client import Client, CliError, api_error
from controller.cli_views import gateway_view, safe, security_view, status_view, table, to_json
from controller.store import StoreError

COMMANDS = ("serve", "token", "login", "enterprise", "subnet", "gateway", "image", "app", "vm", "policy", "qos",
            "security")
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


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _client(args: argparse.Namespace) -> Client:
    try:
        return Client(cli_auth.resolve_url(args), cli_auth.resolve_token(args))
    except cli_auth.AuthError as exc:
        raise CliError(str(exc)) from None


def _print_json(doc: object) -> None:
    print(to_json(doc))


def _print(lines: list[str]) -> None:
    """Lines of cli_views (each made safe there)."""
    for line in lines:
        print(line)


def _table(rows: list[list[Any]], header: list[str]) -> None:
    _print(table(rows, header))


def _listing(args: argparse.Namespace, path: str, key: str) -> list[dict[str, Any]] | None:
    """GET a list; with --json print it as it came and return None."""
    doc = _client(args).call("GET", path)
    if args.json:
        _print_json(doc)
        return None
    return doc[key]


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
    _print_json(_client(args).call("POST", "/enterprises", body))


def _enterprise_list(args: argparse.Namespace) -> None:
    ents = _listing(args, "/enterprises", "enterprises")
    if ents is None:
        return
    _table([[e["name"], e["transport"], str(e["generation"])] for e in ents], ["NAME", "TRANSPORT", "GENERATION"])


def _enterprise_show(args: argparse.Namespace) -> None:
    _print_json(_client(args).call("GET", f"/enterprises/{_q(args.name)}"))


def _enterprise_delete(args: argparse.Namespace) -> None:
    _client(args).call("DELETE", f"/enterprises/{_q(args.name)}")


def _subnet_add(args: argparse.Namespace) -> None:
    body = {"name": args.name, "vni": args.vni, "cidr": args.cidr, "gateway": args.gateway}
    _print_json(_client(args).call("POST", f"/enterprises/{_q(args.enterprise)}/subnets", body))


def _subnet_list(args: argparse.Namespace) -> None:
    subnets = _listing(args, f"/enterprises/{_q(args.enterprise)}/subnets", "subnets")
    if subnets is None:
        return
    _table([[s["name"], str(s["vni"]), s["cidr"], s["gateway"]] for s in subnets], ["NAME", "VNI", "CIDR", "GATEWAY"])


def _subnet_delete(args: argparse.Namespace) -> None:
    _client(args).call("DELETE", f"/enterprises/{_q(args.enterprise)}/subnets/{_q(args.name)}")


def _gateway_add(args: argparse.Namespace) -> None:
    ports: dict[str, list[str]] = {}
    for subnet, ifaces in args.port:
        ports.setdefault(subnet, []).extend(ifaces)
    body: dict[str, Any] = {"name": args.name, "serial": args.serial, "uplinks": args.uplink, "ports": ports,
                            "behind_nat": args.behind_nat, "role": args.role}
    if args.activation_code_file:
        body["activation_code"] = _read_code(args.activation_code_file)
    _print_json(_client(args).call("POST", f"/enterprises/{_q(args.enterprise)}/gateways", body))


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
    _print_json(_client(args).call("PATCH", f"/gateways/{_q(args.name)}{query}", body))


def _gateway_list(args: argparse.Namespace) -> None:
    gws = _listing(args, f"/enterprises/{_q(args.enterprise)}/gateways", "gateways")
    if gws is None:
        return
    rows = [[g["name"], g["role"], g["serial"], g["system_ip"], "yes" if g["behind_nat"] else "no"] for g in gws]
    _table(rows, ["NAME", "ROLE", "SERIAL", "SYSTEM IP", "BEHIND NAT"])


def _gateway_show(args: argparse.Namespace) -> None:
    client = _client(args)
    gateway = client.call("GET", f"/gateways/{_q(args.name)}")
    if args.json:
        _print_json(gateway)
        return
    _print(gateway_view(gateway, client.call("GET", f"/gateways/{_q(args.name)}/status")))


def _gateway_config(args: argparse.Namespace) -> None:
    _print_json(_client(args).call("GET", f"/gateways/{_q(args.name)}/config"))


def _gateway_delete(args: argparse.Namespace) -> None:
    _client(args).call("DELETE", f"/gateways/{_q(args.name)}")


def _gateway_reset_identity(args: argparse.Namespace) -> None:
    doc = _client(args).call("POST", f"/gateways/{_q(args.name)}/reset-identity")
    if args.json:
        _print_json(doc)
        return
    gone = ", ".join(doc["revoked"]) or "none held"
    print(safe(f"{doc['name']} (serial {doc['serial']}): LDevIDs revoked: {gone}; "
               "the box may now enroll once with its factory identity"))


def _gateway_status(args: argparse.Namespace) -> None:
    doc = _client(args).call("GET", f"/gateways/{_q(args.name)}/status")
    if args.json:
        _print_json(doc)
        return
    _print(status_view(doc, time.time()))


def _image_upload(args: argparse.Namespace) -> None:
    try:
        f = open(args.file, "rb")  # noqa: SIM115 - streamed by urllib, closed below
        size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise CliError(f"{args.file}: {exc.strerror}") from None
    with f:
        client = _client(args)
        client.timeout = max(client.timeout, size / (10 << 20))  # give a big tarball time: >= 10 MB/s
        req_path = f"/enterprises/{_q(args.enterprise)}/images"
        _print_json(client.call("POST", req_path, raw=f, content_type="application/x-tar"))


def _image_list(args: argparse.Namespace) -> None:
    images = _listing(args, f"/enterprises/{_q(args.enterprise)}/images", "images")
    if images is None:
        return
    _table([[i["sha256"][:16], str(i["size"]), ",".join(i["references"]), i["created"]] for i in images],
           ["SHA256", "SIZE", "REFERENCES", "UPLOADED"])


def _image_delete(args: argparse.Namespace) -> None:
    _client(args).call("DELETE", f"/enterprises/{_q(args.enterprise)}/images/{_q(args.sha256)}")


def _app_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key in ("image", "image_sha256", "memory_mb", "cpus", "pids", "restart"):
        if getattr(args, key, None) is not None:
            body[key] = getattr(args, key)
    if args.command is not None:
        try:
            body["command"] = shlex.split(args.command)
        except ValueError as exc:
            raise CliError(f"--command: {exc}") from None
    if args.env:
        env = {}
        for item in args.env:
            key, sep, value = item.partition("=")
            if not sep:
                raise CliError(f"--env {item!r}: give NAME=VALUE")
            env[key] = value
        body["env"] = env
    return body


def _app_add(args: argparse.Namespace) -> None:
    body = {"name": args.name, "subnet": args.subnet, **_app_body(args)}
    if args.address:
        body["address"] = args.address
    _print_json(_client(args).call("POST", f"/gateways/{_q(args.gateway)}/apps", body))


def _app_set(args: argparse.Namespace) -> None:
    body = _app_body(args)
    if not body:
        raise CliError("nothing to change: give --image, --command, --env, --memory-mb, --cpus, --pids or --restart")
    _print_json(_client(args).call("PATCH", f"/gateways/{_q(args.gateway)}/apps/{_q(args.name)}", body))


def _app_list(args: argparse.Namespace) -> None:
    apps = _listing(args, f"/gateways/{_q(args.gateway)}/apps", "apps")
    if apps is None:
        return
    rows = []
    for a in apps:
        live = a["live"] or {}
        mem, cpu = live.get("memory_mb"), live.get("cpu_percent")
        rows.append([a["name"], a["subnet"], a["address"], a["image"], str(live.get("state") or "-"),
                     str(live.get("restarts", "-")), "-" if mem is None else f"{mem:.1f}",
                     "-" if cpu is None else f"{cpu:.1f}", live.get("error") or ""])
    _table(rows, ["NAME", "SUBNET", "ADDRESS", "IMAGE", "STATE", "RESTARTS", "MEM MB", "CPU %", "ERROR"])


def _app_show(args: argparse.Namespace) -> None:
    _print_json(_client(args).call("GET", f"/gateways/{_q(args.gateway)}/apps/{_q(args.name)}"))


def _app_delete(args: argparse.Namespace) -> None:
    _client(args).call("DELETE", f"/gateways/{_q(args.gateway)}/apps/{_q(args.name)}")


def _source(spec: str, what: str) -> dict[str, str]:
    """``/path/on/the/gateway@SHA256`` -> an image source."""
    path, sep, sha = spec.rpartition("@")
    if not sep or not path.startswith("/"):
        raise CliError(f"--{what} {spec!r}: give /PATH/ON/THE/GATEWAY@SHA256")
    return {"url": "file://" + urllib.parse.quote(path), "sha256": sha}


def _vm_add(args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"name": args.name, "subnet": args.subnet, "kernel": _source(args.kernel, "kernel"),
                            "memory_mb": args.memory_mb, "cpus": args.cpus, "accel": args.accel}
    if args.initrd:
        body["initrd"] = _source(args.initrd, "initrd")
    if args.append:
        body["append"] = args.append
    if args.address:
        body["address"] = args.address
    _print_json(_client(args).call("POST", f"/gateways/{_q(args.gateway)}/vms", body))


def _vm_list(args: argparse.Namespace) -> None:
    vms = _listing(args, f"/gateways/{_q(args.gateway)}/vms", "vms")
    if vms is None:
        return
    rows = [[v["name"], v["subnet"], v["address"], str((v["live"] or {}).get("state") or "-"),
             str((v["live"] or {}).get("restarts", "-")), (v["live"] or {}).get("error") or ""] for v in vms]
    _table(rows, ["NAME", "SUBNET", "ADDRESS", "STATE", "RESTARTS", "ERROR"])


def _vm_delete(args: argparse.Namespace) -> None:
    _client(args).call("DELETE", f"/gateways/{_q(args.gateway)}/vms/{_q(args.name)}")


def _doc_set(args: argparse.Namespace) -> None:
    try:
        doc = json.loads(args.file.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"{args.file}: {exc}") from None
    _print_json(_client(args).call("PUT", f"/enterprises/{_q(args.enterprise)}/{args.cmd}", doc))


def _doc_show(args: argparse.Namespace) -> None:
    _print_json(_client(args).call("GET", f"/enterprises/{_q(args.enterprise)}/{args.cmd}"))


def _doc_clear(args: argparse.Namespace) -> None:
    _client(args).call("DELETE", f"/enterprises/{_q(args.enterprise)}/{args.cmd}")


def _policy_counters(args: argparse.Namespace) -> None:
    doc = _client(args).call("GET", f"/gateways/{_q(args.gateway)}/policy/counters")
    if args.json:
        _print_json(doc)
        return
    if not doc["counters"]:
        print(safe(f"{args.gateway}: no counters reported yet" + ("" if doc["connected"] else " (not connected)")))
        return
    rows = [[name, c["packets"], c["bytes"]] for name, c in doc["counters"].items()]
    _table(rows, ["RULE", "PACKETS", "BYTES"])


def _security_events(args: argparse.Namespace) -> None:
    path = "/security-events" + (f"?gateway={_q(args.gateway)}" if args.gateway else "")
    doc = _client(args).call("GET", path)
    if args.json:
        _print_json(doc)
        return
    _print(security_view(doc, time.time()))


def _reflector_view(args: argparse.Namespace) -> None:
    """What each gateway of the enterprise owns, for `route-reflector --owners FILE`: from the configs
    the controller renders (controller/rr_policy.py). Written whole (0600), or printed."""
    from controller.rr_policy import ViewError, dump_view, view_from_configs
    from nsg.model import ConfigError, parse_config

    client = _client(args)
    gws = client.call("GET", f"/enterprises/{_q(args.enterprise)}/gateways")["gateways"]
    try:
        configs = {g["name"]: parse_config(client.call("GET", f"/gateways/{_q(g['name'])}/config"),
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
                   help="name=wan0,interface=eth0,mode=static|dhcp[,address=A/P,gateway=G][,public=IP][,mtu=N]")
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

    i = group("image", "app images: `docker save` tarballs the controller serves to gateways (over the API)")
    p = leaf(i, "upload", _image_upload, api, help_="upload a `docker save` tarball")
    p.add_argument("enterprise")
    p.add_argument("file", type=Path)
    leaf(i, "list", _image_list, api, js, help_="list an enterprise's images").add_argument("enterprise")
    p = leaf(i, "delete", _image_delete, api, help_="delete an image no app runs")
    p.add_argument("enterprise")
    p.add_argument("sha256")

    def app_settings(p: Any, *, new: bool) -> None:
        p.add_argument("--image", required=new, help="the reference to run (an uploaded tarball must tag it)")
        p.add_argument("--image-sha256", help="which upload (default: the newest that tags --image)")
        p.add_argument("--command", help="the command line, split like a shell would")
        p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
        p.add_argument("--memory-mb", type=int)
        p.add_argument("--cpus", type=float)
        p.add_argument("--pids", type=int)
        p.add_argument("--restart", choices=("no", "always", "on-failure", "unless-stopped"))

    a = group("app", "tenant apps (containers) on gateways (over the API)")
    p = leaf(a, "add", _app_add, api, help_="add an app; without --address the controller's IPAM picks one")
    p.add_argument("gateway")
    p.add_argument("name")
    p.add_argument("--subnet", required=True)
    p.add_argument("--address", help="a fixed address in the subnet")
    app_settings(p, new=True)
    p = leaf(a, "set", _app_set, api, help_="change an app's image, command, environment or limits")
    p.add_argument("gateway")
    p.add_argument("name")
    app_settings(p, new=False)
    leaf(a, "list", _app_list, api, js, help_="list a gateway's apps with their reported state").add_argument("gateway")
    for name, run, text in (("show", _app_show, "show an app"), ("delete", _app_delete, "remove an app")):
        p = leaf(a, name, run, api, help_=text)
        p.add_argument("gateway")
        p.add_argument("name")

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

    v = group("vm", "tenant VMs (qemu on a TAP of the subnet's bridge) on gateways (over the API)")
    p = leaf(v, "add", _vm_add, api, help_="add a VM; without --address the controller's IPAM picks one")
    p.add_argument("gateway")
    p.add_argument("name")
    p.add_argument("--subnet", required=True)
    p.add_argument("--address", help="a fixed address in the subnet")
    p.add_argument("--kernel", required=True, metavar="PATH@SHA256", help="the guest kernel, a file on the gateway")
    p.add_argument("--initrd", metavar="PATH@SHA256", help="its initrd, a file on the gateway")
    p.add_argument("--append", help="more kernel command line")
    p.add_argument("--memory-mb", type=int, default=256)
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    leaf(v, "list", _vm_list, api, js, help_="list a gateway's VMs with their reported state").add_argument("gateway")
    p = leaf(v, "delete", _vm_delete, api, help_="remove a VM")
    p.add_argument("gateway")
    p.add_argument("name")


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
