"""`nsg-controller` commands for what runs on gateways besides forwarding: ``image`` (app images, the
`docker save` tarballs the controller serves), ``app`` (tenant containers) and ``vm`` (tenant VMs).
Split from admin_cli.py, which registers these groups among the others (in its order, so that
`--help` lists the commands as before) and runs them; helpers shared with it: admin_common.py.
"""

from __future__ import annotations

import argparse
import shlex
import urllib.parse
from pathlib import Path
from typing import Any

from controller.admin_common import Group, Leaf, listing, make_client, print_json, print_table, q, upload
from controller.api_client import CliError


def _image_upload(args: argparse.Namespace) -> None:
    print_json(upload(args, args.file, f"/enterprises/{q(args.enterprise)}/images"))


def _image_list(args: argparse.Namespace) -> None:
    images = listing(args, f"/enterprises/{q(args.enterprise)}/images", "images")
    if images is None:
        return
    print_table([[i["sha256"][:16], str(i["size"]), ",".join(i["references"]), i["created"]] for i in images],
           ["SHA256", "SIZE", "REFERENCES", "UPLOADED"])


def _image_delete(args: argparse.Namespace) -> None:
    make_client(args).call("DELETE", f"/enterprises/{q(args.enterprise)}/images/{q(args.sha256)}")


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
    print_json(make_client(args).call("POST", f"/gateways/{q(args.gateway)}/apps", body))


def _app_set(args: argparse.Namespace) -> None:
    body = _app_body(args)
    if not body:
        raise CliError("nothing to change: give --image, --command, --env, --memory-mb, --cpus, --pids or --restart")
    print_json(make_client(args).call("PATCH", f"/gateways/{q(args.gateway)}/apps/{q(args.name)}", body))


def _app_list(args: argparse.Namespace) -> None:
    apps = listing(args, f"/gateways/{q(args.gateway)}/apps", "apps")
    if apps is None:
        return
    rows = []
    for a in apps:
        live = a["live"] or {}
        mem, cpu = live.get("memory_mb"), live.get("cpu_percent")
        rows.append([a["name"], a["subnet"], a["address"], a["image"], str(live.get("state") or "-"),
                     str(live.get("restarts", "-")), "-" if mem is None else f"{mem:.1f}",
                     "-" if cpu is None else f"{cpu:.1f}", live.get("error") or ""])
    print_table(rows, ["NAME", "SUBNET", "ADDRESS", "IMAGE", "STATE", "RESTARTS", "MEM MB", "CPU %", "ERROR"])


def _app_show(args: argparse.Namespace) -> None:
    print_json(make_client(args).call("GET", f"/gateways/{q(args.gateway)}/apps/{q(args.name)}"))


def _app_delete(args: argparse.Namespace) -> None:
    make_client(args).call("DELETE", f"/gateways/{q(args.gateway)}/apps/{q(args.name)}")


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
    print_json(make_client(args).call("POST", f"/gateways/{q(args.gateway)}/vms", body))


def _vm_list(args: argparse.Namespace) -> None:
    vms = listing(args, f"/gateways/{q(args.gateway)}/vms", "vms")
    if vms is None:
        return
    rows = [[v["name"], v["subnet"], v["address"], str((v["live"] or {}).get("state") or "-"),
             str((v["live"] or {}).get("restarts", "-")), (v["live"] or {}).get("error") or ""] for v in vms]
    print_table(rows, ["NAME", "SUBNET", "ADDRESS", "STATE", "RESTARTS", "ERROR"])


def _vm_delete(args: argparse.Namespace) -> None:
    make_client(args).call("DELETE", f"/gateways/{q(args.gateway)}/vms/{q(args.name)}")


# -- argparse (called by admin_cli.add_subcommands) --------------------------------------------


def add_image_commands(group: Group, leaf: Leaf, api: argparse.ArgumentParser,
                       js: argparse.ArgumentParser) -> None:
    i = group("image", "app images: `docker save` tarballs the controller serves to gateways (over the API)")
    p = leaf(i, "upload", _image_upload, api, help_="upload a `docker save` tarball")
    p.add_argument("enterprise")
    p.add_argument("file", type=Path)
    leaf(i, "list", _image_list, api, js, help_="list an enterprise's images").add_argument("enterprise")
    p = leaf(i, "delete", _image_delete, api, help_="delete an image no app runs")
    p.add_argument("enterprise")
    p.add_argument("sha256")


def add_app_commands(group: Group, leaf: Leaf, api: argparse.ArgumentParser,
                     js: argparse.ArgumentParser) -> None:
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


def add_vm_commands(group: Group, leaf: Leaf, api: argparse.ArgumentParser,
                    js: argparse.ArgumentParser) -> None:
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
