"""`nsg`: run the gateway daemon, ask it for status, check a config file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nsg import __version__

DEFAULT_STATE_DIR = Path("/var/lib/nsg")
IMAGE_MANIFEST = Path("/usr/share/nsg/manifest.json")  # written by the image builder (image/rootfs.py)
SHOW_TABLES = {"evpn": "EVPN routes: ours and those each BGP peer sent"}  # `nsg show TABLE`


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nsg", description="SD-WAN branch gateway")
    p.add_argument("--version", action="version", version=f"nsg {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    # Each (sub)command's parser rides along in the namespace, so a mistyped option gets the usage
    # of the command it was given to (main()); the deepest parser wins.
    run = sub.add_parser("run", help="run the gateway daemon")
    run.set_defaults(parser=run)
    run.add_argument("--config", type=Path, help="gateway config (JSON); default: the last good config kept")
    run.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    run.add_argument("--flush-on-exit", action="store_true",
                     help="remove the dataplane nsg built when the daemon exits")
    run.add_argument("--resync-interval", type=float, default=30.0, metavar="SECONDS",
                     help="re-apply the desired state this often (repairs drift)")
    run.add_argument("--controller", metavar="URL",
                     help="hold the management channel to this controller (wss://...); identity from STATE/identity")
    run.add_argument("--bootstrap", metavar="WAN",
                     help="zero-touch: DHCP on this WAN port, discover bootstrap servers, SZTP + EST, then the channel")
    run.add_argument("--media", type=Path, action="append", help="where to look for nsg-bootstrap.json (repeatable)")
    run.add_argument("--imds-url", help="bootstrap: also ask this AWS IMDSv2 endpoint (AMI builds)")
    run.add_argument("--channel-retry-max", type=float, default=60.0, metavar="SECONDS",
                     help="longest wait between reconnects to the controller (jittered backoff)")
    run.add_argument("--telemetry-interval", type=float, default=30.0, metavar="SECONDS",
                     help="send counters (and the firewall's rule counters) to the controller this often")
    run.add_argument("--docker", default="unix:///run/docker.sock", metavar="URL",
                     help="the Docker engine that runs the config's apps")
    run.add_argument("--resolv-conf", type=Path, metavar="FILE",
                     help="write the box's resolv.conf here from the uplinks' DHCP leases (the appliance: "
                          "/run/nsg/resolv.conf, where /etc/resolv.conf links); default: none written")
    run.add_argument("--test-upgrade-box", type=Path, metavar="DIR",
                     help="tests and labs only: the A/B slots are files in DIR (grubenv, cmdline, release.json, "
                          "release-keys/, by-partlabel/) and a reboot only writes DIR/reboot-requested")
    run.add_argument("--log-format", choices=("json", "text"), default="json")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")

    st = sub.add_parser("status", help="show what the running daemon is doing")
    st.set_defaults(parser=st)
    st.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    st.add_argument("--json", action="store_true")

    show = sub.add_parser("show", help="show a table of the running daemon (without TABLE: list them)")
    show.set_defaults(parser=show)
    show_sub = show.add_subparsers(dest="show_cmd", metavar="TABLE")
    for table, what in SHOW_TABLES.items():
        sh = show_sub.add_parser(table, help=what)
        sh.set_defaults(parser=sh)
        sh.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
        sh.add_argument("--json", action="store_true")

    ips = sub.add_parser("ipsec", help="act on the IPsec tunnels of the running daemon")
    ips.set_defaults(parser=ips)
    ips_sub = ips.add_subparsers(dest="ipsec_cmd", required=True, metavar="ACTION")
    rk = ips_sub.add_parser("rekey", help="rekey the child SA (or with --ike the IKE SA) toward a peer")
    rk.set_defaults(parser=rk)
    rk.add_argument("peer")
    rk.add_argument("--ike", action="store_true")
    rk.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)

    fi = sub.add_parser("factory-init", help="give this box its factory identity (IDevID), for labs and images")
    fi.set_defaults(parser=fi)
    fi.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    fi.add_argument("--manufacturer-dir", type=Path, required=True,
                    help="the manufacturer CA (created there if absent: a lab CA)")
    fi.add_argument("--serial", help="serial number (default: from DMI)")
    fi.add_argument("--force", action="store_true", help="replace an existing identity")

    act = sub.add_parser("activate", help="give this gateway its activation code (asked for by the controller)")
    act.set_defaults(parser=act)
    act.add_argument("code", nargs="?", help="the code; '-' or nothing: read it from standard input")
    act.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)

    ver = sub.add_parser("version", help="this build: nsg's version and, on an nsg image, what the image holds "
                                         "(Debian and Python packages with versions, kernel, slot)")
    ver.set_defaults(parser=ver)
    ver.add_argument("--json", action="store_true")
    ver.add_argument("--manifest", type=Path, default=IMAGE_MANIFEST, help=argparse.SUPPRESS)

    chk = sub.add_parser("check-config", help="run the checks `nsg run` makes before it starts a config (the "
                                              "document, and the credentials it names), without applying it")
    chk.set_defaults(parser=chk)
    chk.add_argument("config", type=Path)
    chk.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                     help="where `nsg run` would keep its state (the identity store, for ipsec auth 'ldevid')")

    from nsg.upgrade.cli import add_parser as add_upgrade_parser

    add_upgrade_parser(sub)  # `nsg upgrade FILE|URL`, `nsg upgrade status|settle`
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = _parser()
    args, extra = p.parse_known_args(argv)
    if extra:
        # unknown options after the command are that command's to explain (before it: ours)
        own = getattr(args, "parser", p)
        before_cmd = args.cmd in argv and argv.index(extra[0]) < argv.index(args.cmd) if extra[0] in argv else False
        (p if before_cmd else own).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.cmd == "run":
        from nsg import log
        from nsg.daemon import run_daemon

        log.setup(args.log_format, args.log_level)
        if args.resync_interval <= 0 or args.channel_retry_max < 1 or args.telemetry_interval < 1:
            print("nsg: --resync-interval must be positive, --channel-retry-max and --telemetry-interval at "
                  "least 1", file=sys.stderr)
            return 2
        return run_daemon(args.config, args.state_dir, flush_on_exit=args.flush_on_exit,
                          resync_interval=args.resync_interval, controller_url=args.controller,
                          bootstrap_wan=args.bootstrap, media_dirs=args.media,
                          channel_retry_max=args.channel_retry_max, imds_url=args.imds_url,
                          docker_url=args.docker, telemetry_interval=args.telemetry_interval,
                          test_upgrade_box=args.test_upgrade_box, resolv_conf=args.resolv_conf)
    if args.cmd == "status":
        from nsg.control_socket import ControlError, request
        from nsg.status import render

        try:
            st = request(args.state_dir, "status")
        except ControlError as exc:
            print(f"nsg: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(st, indent=2) if args.json else render(st))
        return 0
    if args.cmd == "show":
        from nsg.control_socket import ControlError, request

        if args.show_cmd is None:
            print("nsg show TABLE [--json] [--state-dir DIR]; the tables:")
            for table, what in SHOW_TABLES.items():
                print(f"  {table:<10} {what}")
            return 0

        try:
            res = request(args.state_dir, "evpn")
        except ControlError as exc:
            print(f"nsg: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(res, indent=2) if args.json else _evpn_table(res))
        return 0
    if args.cmd == "ipsec":
        from nsg.control_socket import ControlError, request

        try:
            res = request(args.state_dir, "rekey", peer=args.peer, ike=args.ike)
        except ControlError as exc:
            print(f"nsg: {exc}", file=sys.stderr)
            return 1
        print(f"rekey of the {res['rekey']} SA toward {res['peer']} started")
        return 0
    if args.cmd == "factory-init":
        from bootstrap.identity import IdentityError, discover_serial, factory_init, make_manufacturer_ca

        try:
            serial = args.serial or discover_serial(store=None)[0]
            cert = factory_init(args.state_dir / "identity", serial, make_manufacturer_ca(args.manufacturer_dir),
                                force=args.force)
        except (IdentityError, OSError) as exc:
            print(f"nsg: factory-init: {exc}", file=sys.stderr)
            return 1
        print(f"{args.state_dir / 'identity'}: IDevID for serial {serial}, issued by {cert.issuer.rfc4514_string()}")
        return 0
    if args.cmd == "activate":
        from bootstrap.driver import ACTIVATION_CODE
        from bootstrap.identity import write_private

        code = args.code if args.code not in (None, "-") else sys.stdin.readline().strip()
        if not code or len(code) > 128 or not code.isprintable():
            print("nsg: activate: the code must be 1-128 printable characters", file=sys.stderr)
            return 2
        ident = args.state_dir / "identity"
        if not (ident / "idevid.pem").exists():
            print(f"nsg: activate: {ident} holds no factory identity", file=sys.stderr)
            return 1
        write_private(ident / ACTIVATION_CODE, code.encode())
        print("activation code stored; the gateway presents it at its next enrollment attempt")
        return 0
    if args.cmd == "version":
        doc = _version_doc(args.manifest)
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            img = (doc.get("manifest") or {}).get("image", {})
            print(f"nsg {doc['version']}" + (f", image {img.get('version')} built {img.get('built')}, slot "
                                             f"{doc.get('slot') or '?'}" if img else " (not on an nsg image)"))
        return 0
    if args.cmd == "check-config":
        from nsg.model import ConfigError
        from nsg.preflight import check_config_file

        try:
            cfg = check_config_file(args.config, args.state_dir)
        except ConfigError as exc:
            print(f"nsg: {exc.source}: invalid configuration:", file=sys.stderr)
            for problem in exc.problems:
                print(f"  {problem}", file=sys.stderr)
            return 2
        print(f"{args.config}: ok (system ip {cfg.system_ip}, {len(cfg.subnets)} subnets, {len(cfg.peers)} peers)")
        return 0
    if args.cmd == "upgrade":
        from nsg.upgrade.cli import run as run_upgrade

        return run_upgrade(args)
    return 2


def _version_doc(manifest: Path) -> dict:
    """nsg's version; on an image also its manifest (package names and versions) and the root slot
    this boot runs from (nsg.slot= on the kernel command line, set by grub.cfg)."""
    doc: dict = {"version": __version__, "manifest": None, "slot": None}
    try:
        doc["manifest"] = json.loads(manifest.read_text())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        doc["manifest_error"] = f"{manifest}: {exc}"
    try:
        words = Path("/proc/cmdline").read_text().split()
    except OSError:
        words = []
    doc["slot"] = next((w.split("=", 1)[1] for w in words if w.startswith("nsg.slot=")), None)
    return doc


def _evpn_table(res: dict) -> str:
    from nsg.model.status import EvpnStatus

    lines = ["BGP peers:"]
    for addr, p in sorted(EvpnStatus.model_validate(res).peers.items()):
        lines.append(f"  {addr:<16} {p.state}")
    fmt = "  {:<16}{:<6}{:<9}{:<19}{:<19}{:<16}{:<5}{}"
    lines.append(fmt.format("from", "type", "vni", "mac / prefix", "ip / gateway ip", "vtep", "seq", "best"))
    for origin, rows in (("local", res.get("local", [])), (None, res.get("received", []))):
        for r in rows:
            what = r.get("mac") or r.get("prefix") or "-"
            ip = r.get("ip") or r.get("gateway_ip") or "-"
            mark = "*" if r.get("best", True) else ""
            if r.get("refused"):
                mark = f"refused: {r['refused']}"
            elif r.get("frozen"):
                mark += " frozen"
            lines.append(fmt.format(origin or r["peer"], r["type"], r.get("vni", "-"), what, ip,
                                    r.get("vtep") or "self", r.get("seq", "-"), mark))
    st = EvpnStatus.model_validate(res)
    for f in st.frozen_macs:
        lines.append(f"frozen (duplicate MAC): vni {f.get('vni')} {f.get('mac')} at {f.get('at')}, "
                     f"{f.get('moves')} moves, {f.get('remaining_s')} s left")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
