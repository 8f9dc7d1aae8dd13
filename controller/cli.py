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
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    r = sub.add_parser("render", help="write each gateway's config (full mesh) from an enterprise file")
    r.add_argument("--enterprise", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True, help="directory; writes <gateway>.json")
    admin_cli.add_subcommands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd in admin_cli.COMMANDS:
        return admin_cli.dispatch(args)
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
