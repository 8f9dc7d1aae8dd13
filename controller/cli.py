"""`nsg-controller`: the reference controller's command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from controller import admin_cli
from controller.enterprise import Enterprise
from controller.mesh import render
from nsg.model import ConfigError
from nsg.model.config import dump_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nsg-controller", description="nsg reference controller")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=admin_cli.SubcommandParser)
    r = sub.add_parser("render", help="write each gateway's config (full mesh) from an enterprise file")
    r.add_argument("--enterprise", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True, help="directory; writes <gateway>.json")
    rr = sub.add_parser("route-reflector", help="run a standalone BGP EVPN route reflector (RFC 4456)")
    rr.add_argument("--listen", required=True, metavar="ADDR[:PORT]", help="address to accept clients on")
    rr.add_argument("--asn", type=int, required=True, help="the AS of the reflector and its clients (iBGP)")
    rr.add_argument("--router-id", required=True, help="router id and cluster id (an IPv4 address)")
    rr.add_argument("--client", action="append", default=[], metavar="ADDR",
                    help="accept only these client addresses (repeat); default: any")
    rr.add_argument("--hold-time", type=int, default=9)
    rr.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    admin_cli.add_subcommands(sub)
    return p


def _route_reflector(args: argparse.Namespace) -> int:
    import asyncio
    import ipaddress
    import logging
    import signal

    from controller.route_reflector import RouteReflector

    host, _, port = args.listen.partition(":")
    try:
        ipaddress.IPv4Address(host)
        ipaddress.IPv4Address(args.router_id)
        for c in args.client:
            ipaddress.IPv4Address(c)
        port_no = int(port) if port else 179
        if not 0 < port_no < 65536 or not 0 < args.asn < 1 << 32 or not 3 <= args.hold_time <= 65535:
            raise ValueError("port, --asn or --hold-time out of range")
    except ValueError as exc:
        print(f"nsg-controller route-reflector: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def run() -> None:
        rr = RouteReflector(args.asn, args.router_id, hold_time=args.hold_time,
                            allowed=set(args.client) or None)
        bound = await rr.start(host, port_no)
        print(f"route reflector listening on {host}:{bound}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await rr.stop(restart=True)  # clients keep the routes for our restart time (RFC 4724)

    asyncio.run(run())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd in admin_cli.COMMANDS:
        return admin_cli.dispatch(args)
    if args.cmd == "route-reflector":
        return _route_reflector(args)
    if args.cmd == "render":
        try:
            ent = Enterprise.model_validate_json(args.enterprise.read_text())
            configs = render(ent)
        except OSError as exc:
            print(f"nsg-controller: {args.enterprise}: {exc.strerror}", file=sys.stderr)
            return 1
        except ValidationError as exc:
            print(f"nsg-controller: {args.enterprise}: invalid enterprise:\n{exc}", file=sys.stderr)
            return 2
        except ConfigError as exc:
            print(f"nsg-controller: {exc}", file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
        for name, cfg in configs.items():
            path = args.out / f"{name}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(dump_config(cfg))
            tmp.replace(path)
            print(f"{path}: {len(cfg.peers)} peers, {len(cfg.subnets)} subnets")
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
