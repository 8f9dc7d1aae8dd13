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
                    help="without --owners: accept only these client addresses (repeat; default: any), and pass "
                         "on whatever they announce")
    rr.add_argument("--owners", type=Path, metavar="FILE",
                    help="what each client (by system IP) owns, as JSON (controller/rr_policy.py): only its own "
                         "routes are reflected. Re-read on SIGHUP and when the file changes; a bad file is "
                         "refused and the previous view kept")
    rr.add_argument("--hold-time", type=int, default=9)
    rr.add_argument("--min-hold-time", type=int, default=3,
                    help="refuse clients offering less (0, no hold timer at all, is always refused)")
    rr.add_argument("--max-routes", type=int, default=10_000, help="per client (default %(default)s)")
    rr.add_argument("--max-routes-warning", type=int, default=80, metavar="PERCENT")
    rr.add_argument("--max-routes-grace", type=float, default=30.0, metavar="SECONDS",
                    help="how long a client may stay over its limit before its session goes (Cease 6/1)")
    rr.add_argument("--max-routes-excess", type=int, default=1000, metavar="N",
                    help="... or how many routes it may send beyond it")
    rr.add_argument("--max-routes-backoff", type=float, default=120.0, metavar="SECONDS",
                    help="how long its reconnects are refused after that")
    rr.add_argument("--rate", type=float, default=500.0, metavar="ROUTES/S", help="announcements per client")
    rr.add_argument("--burst", type=int, metavar="N", help="announcements at once (default: twice --max-routes)")
    rr.add_argument("--mac-flaps", type=int, default=5, metavar="MOVES",
                    help="moves between clients after which a MAC is frozen where it was (RFC 7432 15.1)")
    rr.add_argument("--mac-flap-window", type=float, default=180.0, metavar="SECONDS",
                    help="... within this time; also how long it stays frozen")
    rr.add_argument("--events-to", metavar="URL",
                    help="the controller's admin API (e.g. http://127.0.0.1:8443): refusals are reported there as "
                         "security events, with the token of --token-file")
    rr.add_argument("--token-file", type=Path, metavar="FILE", help="an API token of the reflector's own (0600)")
    rr.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")
    admin_cli.add_subcommands(sub)
    return p


def _route_reflector(args: argparse.Namespace) -> int:
    import asyncio
    import ipaddress
    import logging
    import signal

    from controller.route_reflector import RouteReflector
    from controller.rr_check import Limits
    from controller.rr_policy import ViewError, ViewFile

    host, _, port = args.listen.partition(":")
    try:
        ipaddress.IPv4Address(host)
        ipaddress.IPv4Address(args.router_id)
        for c in args.client:
            ipaddress.IPv4Address(c)
        port_no = int(port) if port else 179
        if not 0 <= port_no < 65536 or not 0 < args.asn < 1 << 32 or not 3 <= args.hold_time <= 65535:
            raise ValueError("port, --asn or --hold-time out of range")
        if not 3 <= args.min_hold_time <= 65535 or args.max_routes < 1 or not 1 <= args.max_routes_warning <= 100 \
                or args.rate <= 0 or args.mac_flaps < 2 or args.mac_flap_window <= 0 \
                or (args.burst is not None and args.burst < 1):
            raise ValueError("--min-hold-time, --max-routes, --max-routes-warning, --rate, --burst, --mac-flaps or "
                             "--mac-flap-window out of range")
        limits = Limits(max_routes=args.max_routes, warn_fraction=args.max_routes_warning / 100,
                        over_grace=args.max_routes_grace, over_excess=args.max_routes_excess,
                        backoff=args.max_routes_backoff, rate=args.rate, burst=args.burst,
                        flap_moves=args.mac_flaps, flap_window=args.mac_flap_window,
                        min_hold_time=args.min_hold_time)
        source = ViewFile(args.owners) if args.owners is not None else None
        view = source.load() if source is not None else None
        if view is not None and view.asn != args.asn:
            raise ViewError(f"{args.owners}: the view is for AS {view.asn}, --asn is {args.asn}")
    except (ValueError, ViewError) as exc:
        print(f"nsg-controller route-reflector: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("controller.rr")
    if view is None:
        log.warning("no --owners: routes are NOT checked against what each client owns; any client may "
                    "announce anything (%s)", f"clients {', '.join(args.client)}" if args.client else "any client")
    elif args.client:
        extra = sorted(set(args.client) - {str(a) for a in view.clients})
        if extra:
            log.warning("--client %s not in %s: refused (with --owners the view names the clients)",
                        ", ".join(extra), args.owners)

    report = None
    if args.events_to:
        from controller.cli_auth import AuthError, resolve_token
        from controller.rr_report import ControllerReport

        if args.token_file is None:
            print("nsg-controller route-reflector: --events-to needs --token-file", file=sys.stderr)
            return 2
        try:
            report = ControllerReport(args.events_to, resolve_token(args))
        except AuthError as exc:
            print(f"nsg-controller route-reflector: {exc}", file=sys.stderr)
            return 2

    async def run() -> None:
        rr = RouteReflector(args.asn, args.router_id, hold_time=args.hold_time, allowed=set(args.client) or None,
                            view=view, limits=limits, on_security_event=report)
        bound = await rr.start(host, port_no)
        print(f"route reflector listening on {host}:{bound}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watcher = None
        if source is not None:
            reload = asyncio.Event()
            loop.add_signal_handler(signal.SIGHUP, reload.set)
            watcher = loop.create_task(_watch_view(rr, source, reload, log))
        await stop.wait()
        if watcher is not None:
            watcher.cancel()
        await rr.stop(restart=True)  # clients keep the routes for our restart time (RFC 4724)

    asyncio.run(run())
    return 0


async def _watch_view(rr, source, reload, log, every: float = 2.0) -> None:
    """Re-read the view on SIGHUP and whenever the file changes; a bad one is refused, the running
    view stays."""
    import asyncio
    import contextlib

    from controller.rr_policy import ViewError

    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reload.wait(), every)
        if not reload.is_set() and not source.changed():
            continue
        reload.clear()
        try:
            view = source.load()
            rr.set_view(view)
        except ViewError as exc:
            log.error("view refused, keeping the previous one: %s", exc)
            continue
        log.info("view loaded from %s: %d clients", source.path, len(view.clients))


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
