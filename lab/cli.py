"""`nsg-lab`: bring network-namespace labs up and down, look inside, run commands in nodes."""

from __future__ import annotations

import argparse
import json
import os
import sys

from lab import topology
from lab.lab import DEFAULT_NAME, Lab
from lab.netns import LabError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nsg-lab", description="network-namespace labs for nsg")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="build a topology")
    up.add_argument("topology", help=f"built-in ({', '.join(sorted(topology.BUILTIN))}) or a JSON file")
    up.add_argument("--name", default=DEFAULT_NAME)
    down = sub.add_parser("down", help="remove a lab: namespaces, links, processes")
    down.add_argument("--name", default=DEFAULT_NAME)
    st = sub.add_parser("status", help="nodes, addresses, processes")
    st.add_argument("--name", default=DEFAULT_NAME)
    st.add_argument("--json", action="store_true")
    demo = sub.add_parser("demo", help="build the demo lab and start nsg on its gateways")
    demo.add_argument("--name", default="demo")
    ex = sub.add_parser("exec", help="run a command inside a node: nsg-lab exec NODE -- CMD...")
    ex.add_argument("--name", default=DEFAULT_NAME)
    ex.add_argument("node")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
                if not st["up"]:
                    print(f"lab {lab.name}: not up")
                for node, info in st["nodes"].items():
                    print(f"{node:<10} {info['kind']:<10} {' '.join(info['addresses']) or '-'}"
                          f"{'  pids ' + ','.join(map(str, info['pids'])) if info['pids'] else ''}")
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
