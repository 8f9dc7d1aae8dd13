"""`nsg-lab`: bring network-namespace labs up and down, look inside, run commands in nodes."""

from __future__ import annotations

import argparse
import json
import os
import sys

from lab import topology
from lab.lab import DEFAULT_NAME, Lab
from lab.netns import LabError

DEMO_NAME = "demo"  # lab.demo.DEMO_NAME (not imported here: lab.demo pulls in the controller)
NAME_HELP = f"the lab to act on (default {DEFAULT_NAME!r}; `make demo` builds {DEMO_NAME!r})"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nsg-lab", description="network-namespace labs for nsg",
        epilog=f"Every command acts on one lab, named with --name (before or after the command); "
               f"without it, the lab {DEFAULT_NAME!r} (the demo's is {DEMO_NAME!r}: "
               f"nsg-lab status --name {DEMO_NAME}).")
    p.add_argument("--name", default=None, help=NAME_HELP)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_)
        # SUPPRESS: given after the command it wins, else the one before it (or the default) stands
        c.add_argument("--name", default=argparse.SUPPRESS, help=NAME_HELP)
        return c

    up = command("up", "build a topology")
    up.add_argument("topology", help=f"built-in ({', '.join(sorted(topology.BUILTIN))}) or a JSON file")
    command("down", "remove a lab: namespaces, links, processes")
    st = command("status", "nodes, addresses, processes (exit status 1: the lab is not up)")
    st.add_argument("--json", action="store_true")
    command("demo", f"build the demo lab (--name default {DEMO_NAME!r}) and start nsg on its gateways")
    ex = command("exec", "run a command inside a node: nsg-lab exec NODE -- CMD...")
    ex.add_argument("node")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.name is None:
        args.name = DEMO_NAME if args.cmd == "demo" else DEFAULT_NAME
    if os.geteuid() != 0:
        print("nsg-lab: needs root (network namespaces)", file=sys.stderr)
        return 1
    try:
        lab = Lab(args.name)
        if args.cmd == "up":
            p = lab.up(topology.load(args.topology))
            print(f"lab {lab.name}: {len(p.nodes)} nodes up ({args.topology})")
        elif args.cmd == "down":
            removed = lab.down()
            print(f"lab {lab.name}: removed {len(removed)} namespaces")
        elif args.cmd == "status":
            st = lab.status()
            if args.json:
                print(json.dumps(st, indent=2))
            else:
                for node, info in st["nodes"].items():
                    print(f"{node:<10} {info['kind']:<10} {' '.join(info['addresses']) or '-'}"
                          f"{'  pids ' + ','.join(map(str, info['pids'])) if info['pids'] else ''}")
            if not st["up"]:
                print(f"lab {lab.name}: not up", file=sys.stderr)
                return 1
        elif args.cmd == "demo":
            from lab import demo

            print(demo.up(args.name))
        elif args.cmd == "exec":
            cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not cmd:
                print("nsg-lab exec: give a command after --", file=sys.stderr)
                return 2
            argv_ = lab.exec_argv(args.node, cmd)
            os.execvp(argv_[0], argv_)
    except (LabError, ValueError) as exc:
        print(f"nsg-lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
