"""`nsg-controller` commands that act on this machine, not over the API: ``serve`` the admin API (and,
with --devices, the gateways' services), ``token`` create/list/revoke on the database file, and
``login``, which keeps a token for the API commands (controller/cli_auth.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from typing import Any

from controller import cli_auth
from controller.api_client import API, Client, CliError
from controller.cli_views import table
from controller.store import Store


def _open_store(args: argparse.Namespace) -> Store:
    if not args.db.exists() and args.action != "create":
        raise CliError(f"--db {args.db}: no such file")
    return Store(args.db)


def token_command(args: argparse.Namespace) -> None:
    expires = None
    if getattr(args, "expires", None) is not None:
        try:
            expires = cli_auth.parse_expiry(args.expires)
        except cli_auth.AuthError as exc:
            raise CliError(str(exc)) from None
    with _open_store(args) as store:
        if args.action == "create":
            print(store.tokens.create(args.name, expires=expires))
            until = f"; it expires {expires.isoformat(timespec='seconds')}" if expires else ""
            print(f"nsg-controller: this token is shown once; only its hash is stored{until}. Keep it with "
                  "`nsg-controller login` (it reads the token from stdin)", file=sys.stderr)
        elif args.action == "list":
            now = datetime.now(UTC)
            rows = [[t.name, t.created, "never" if t.expires is None else
                     t.expires + (" (expired)" if datetime.fromisoformat(t.expires) <= now else "")]
                    for t in store.tokens.list()]
            for line in table(rows, ["NAME", "CREATED", "EXPIRES"]):
                print(line)
        else:
            store.tokens.revoke(args.name)


def login_command(args: argparse.Namespace) -> None:
    def check(url: str, token: str) -> None:
        Client(url, token).call("GET", "/enterprises")  # a refused token is not kept

    try:
        cli_auth.login(args, check)
    except cli_auth.AuthError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot keep the token: {exc}", 1) from None


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        if not sep or not 0 <= int(port) <= 65535 or not ip_address(host).is_loopback:
            raise ValueError
    except ValueError:
        raise CliError(f"--listen {text}: give a loopback ADDRESS:PORT (plain HTTP stays on loopback "
                       "until the API has TLS)") from None
    return host, int(port)


def serve_command(args: argparse.Namespace) -> None:
    from controller.api import make_app  # aiohttp only for the command that needs it

    host, port = _listen(args.listen)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with Store(args.db, system_pool=args.system_pool) as store:
        asyncio.run(_run(make_app, store, host, port, args))


def _site_limits(args: argparse.Namespace) -> Any:
    """serve's --site-* flags (controller/site_guard.py); absent ones keep their defaults."""
    from controller.site_guard import SiteLimits

    given = {field: getattr(args, flag) for field, flag in (
        ("header_timeout_s", "site_header_timeout"), ("idle_timeout_s", "site_idle_timeout"),
        ("max_per_identity", "site_max_per_identity"), ("max_per_address", "site_max_per_address"),
        ("max_connections", "site_max_connections")) if getattr(args, flag, None) is not None}
    if given.get("idle_timeout_s", 60.0) < 15:  # the channel pings every 10 s; a live gateway must not idle out
        raise CliError(f"--site-idle-timeout {given['idle_timeout_s']:g}: give at least 15 seconds (the channel's "
                       "heartbeat is 10 s)")
    try:
        return SiteLimits(**given)
    except ValueError as exc:
        raise CliError(f"--site-*: {exc}") from None


def _channel_limits(args: argparse.Namespace) -> Any:
    from controller.channel_server import ChannelLimits

    timeout = getattr(args, "channel_send_timeout", None)
    try:
        return ChannelLimits() if timeout is None else ChannelLimits(send_timeout_s=timeout)
    except ValueError as exc:
        raise CliError(f"--channel-send-timeout: {exc}") from None


def _release_keys(args: argparse.Namespace | None) -> Any:
    """serve --release-keys DIR: the keys uploaded bundles must verify with (None: bundles are refused)."""
    directory = getattr(args, "release_keys", None)
    if directory is None:
        return None
    from nsg.upgrade.bundle import load_release_keys
    from nsg.upgrade.errors import UpgradeError

    try:
        return load_release_keys(directory)
    except UpgradeError as exc:
        raise CliError(f"--release-keys {directory}: {exc}") from None


async def _run(make_app: Any, store: Store, host: str, port: int, args: argparse.Namespace | None = None) -> None:
    from aiohttp import web

    keys = _release_keys(args)  # before anything starts: a bad key directory is the operator's to fix
    devices = None
    if args is not None and getattr(args, "devices", None):
        from controller.services import DeviceServices

        dhost, _, dport = args.devices.rpartition(":")
        try:
            ip_address(dhost)
            dport_n = int(dport)
        except ValueError:
            raise CliError(f"--devices {args.devices}: give ADDRESS:PORT") from None
        if not args.state_dir or not args.manufacturer_dir:
            raise CliError("--devices needs --state-dir and --manufacturer-dir")
        if not 5 <= args.confirm_window <= 3600:
            raise CliError(f"--confirm-window {args.confirm_window:g}: give 5 to 3600 seconds")
        devices = DeviceServices(store, args.state_dir, dhost, dport_n, args.manufacturer_dir,
                                 site_limits=_site_limits(args), channel_limits=_channel_limits(args))
        devices.hub.confirm_s = args.confirm_window
        if not 60 <= args.ldevid_lifetime <= 20 * 365 * 86400:
            raise CliError(f"--ldevid-lifetime {args.ldevid_lifetime:g}: give 60 seconds to 20 years")
        devices.gate.lifetime = timedelta(seconds=args.ldevid_lifetime)
        await devices.start()
        print(f"nsg-controller: device services (SZTP, EST, channel) on {devices.base_url}", flush=True)
    app = make_app(store, hub=devices.hub if devices else None, images=devices.images_dir if devices else None,
                   bundles=devices.bundles_dir if devices else None, release_keys=keys)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        print(f"nsg-controller: admin API on http://{shown}:{bound}{API}", flush=True)
        if not store.tokens.list():
            print(f"nsg-controller: no admin tokens yet: nsg-controller token create NAME --db {store.path}, "
                  "then nsg-controller login", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if devices is not None:
            await devices.stop()
        await runner.cleanup()

