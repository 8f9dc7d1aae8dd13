"""`nsg-controller` commands for A/B upgrades (docs/upgrades.md): ``bundle`` (signed bundles the controller
verifies with its release keys and serves to the enterprise's gateways) and ``upgrade`` (the release an
enterprise, or one gateway, should run; and what every gateway reports: running and committed version,
slot, last attempt and its outcome). Registered by admin_cli.py like admin_workloads.py's groups;
helpers shared with it: admin_common.py.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from controller.admin_common import Group, Leaf, listing, make_client, print_json, print_lines, print_table, q, upload
from controller.api_client import CliError
from controller.cli_views import upgrade_view


def _bundle_upload(args: argparse.Namespace) -> None:
    print_json(upload(args, args.file, f"/enterprises/{q(args.enterprise)}/bundles"))


def _bundle_list(args: argparse.Namespace) -> None:
    bundles = listing(args, f"/enterprises/{q(args.enterprise)}/bundles", "bundles")
    if bundles is None:
        return
    print_table([[b["model"], b["version"], b["min_version"], b["sha256"][:16], str(b["size"]), b["key_id"],
                  b["created"]] for b in bundles],
                ["MODEL", "VERSION", "MIN VERSION", "SHA256", "SIZE", "RELEASE KEY", "UPLOADED"])


def _bundle_delete(args: argparse.Namespace) -> None:
    make_client(args).call("DELETE", f"/enterprises/{q(args.enterprise)}/bundles/{q(args.sha256)}")


def _gateway_path(args: argparse.Namespace) -> str:
    """/gateways/G/upgrade, once G is known to be in ENTERPRISE (the API names the gateway alone)."""
    client = make_client(args)
    gw = client.call("GET", f"/gateways/{q(args.gateway)}")
    if gw.get("enterprise") != args.enterprise:
        raise CliError(f"gateway {args.gateway} is in enterprise {gw.get('enterprise')}, not {args.enterprise}")
    return f"/gateways/{q(args.gateway)}/upgrade"


def _upgrade_set(args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"version": args.version, "retry": args.retry}
    if args.commit_after is not None:
        body["commit_after_s"] = args.commit_after
    path = _gateway_path(args) if args.gateway else f"/enterprises/{q(args.enterprise)}/upgrade"
    print_json(make_client(args).call("PUT", path, body))


def _upgrade_clear(args: argparse.Namespace) -> None:
    path = _gateway_path(args) if args.gateway else f"/enterprises/{q(args.enterprise)}/upgrade"
    make_client(args).call("DELETE", path)


def _upgrade_status(args: argparse.Namespace) -> None:
    doc = make_client(args).call("GET", f"/enterprises/{q(args.enterprise)}/upgrade")
    if args.json:
        print_json(doc)
        return
    print_lines(upgrade_view(doc, time.time()))


# -- argparse (called by admin_cli.add_subcommands) --------------------------------------------


def add_bundle_commands(group: Group, leaf: Leaf, api: argparse.ArgumentParser,
                        js: argparse.ArgumentParser) -> None:
    b = group("bundle", "signed upgrade bundles the controller verifies and serves to gateways (over the API)")
    p = leaf(b, "upload", _bundle_upload, api,
             help_="upload a bundle (make bundle makes one); kept only if a release key of the controller verifies it")
    p.add_argument("enterprise")
    p.add_argument("file", type=Path)
    leaf(b, "list", _bundle_list, api, js, help_="list an enterprise's bundles").add_argument("enterprise")
    p = leaf(b, "delete", _bundle_delete, api, help_="delete a bundle no upgrade profile names")
    p.add_argument("enterprise")
    p.add_argument("sha256")


def add_upgrade_commands(group: Group, leaf: Leaf, api: argparse.ArgumentParser,
                         js: argparse.ArgumentParser) -> None:
    u = group("upgrade", "the release gateways should run, and what they report (over the API)")
    p = leaf(u, "set", _upgrade_set, api,
             help_="set the release an enterprise's gateways (or one, with --gateway) should run")
    p.add_argument("enterprise")
    p.add_argument("--gateway", help="this gateway only (overrides the enterprise's profile)")
    p.add_argument("--version", required=True, help="an uploaded bundle's version")
    p.add_argument("--commit-after", type=float, metavar="SECONDS",
                   help="how long the new slot has to become healthy before the box falls back (default 300)")
    p.add_argument("--retry", action="store_true",
                   help="one more try of this version on the boxes where it failed (never retried otherwise)")
    p = leaf(u, "clear", _upgrade_clear, api, help_="clear the enterprise's (or --gateway's own) upgrade profile")
    p.add_argument("enterprise")
    p.add_argument("--gateway")
    leaf(u, "status", _upgrade_status, api, js,
         help_="per gateway: running and committed version, slot, target, last attempt and its outcome"
         ).add_argument("enterprise")
