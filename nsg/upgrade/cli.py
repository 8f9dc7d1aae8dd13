"""`nsg upgrade FILE|https-URL`, `nsg upgrade status [--json]`, `nsg upgrade settle`.

nsg/cli.py registers the command with add_parser() and hands the parsed arguments to run(). Kept free
of heavy imports at module level: building nsg's parser must not load cryptography.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nsg.upgrade.paths import CMDLINE, DEFAULT_COMMIT_AFTER_S, GRUBENV, KEYS_DIR, PARTLABEL_DIR, RELEASE_FILE, STATE_DIR


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    up = sub.add_parser(
        "upgrade", help="install a signed upgrade bundle (A/B), or show the slots' state",
        description="nsg upgrade FILE|https://URL: verify the bundle (signature, model, version, SHA-256), write it "
                    "to the inactive slot, read it back, arm it to boot once and reboot; the new slot is committed "
                    "when the box is healthy within --commit-after seconds, else the next boot falls back. "
                    "nsg upgrade status: the slots, the last attempt, the refusals. nsg upgrade settle: commit or "
                    "reject this boot's trial (once per boot, after nsg.service: the image runs it from a "
                    "oneshot unit). A file named 'status' or 'settle' is given as ./status.")
    up.set_defaults(parser=up)
    up.add_argument("source", metavar="FILE|URL|status|settle")
    up.add_argument("--commit-after", type=float, default=DEFAULT_COMMIT_AFTER_S, metavar="SECONDS",
                    help="how long the new slot has to get healthy (daemon up, controller channel established)")
    up.add_argument("--allow-downgrade", action="store_true",
                    help="install a bundle not newer than the running release (never below its min_version)")
    up.add_argument("--no-reboot", action="store_true", help="arm the new slot; it boots at the next reboot")
    up.add_argument("--ca", type=Path, metavar="PEM",
                    help="https: the CA to verify the server with (default: STATE/identity/controller-ca.pem if "
                         "present, else the system CA store)")
    up.add_argument("--json", action="store_true", help="status: print JSON (what the controller is sent)")
    up.add_argument("--state-dir", type=Path, default=STATE_DIR,
                    help="nsg's directory on the data partition (upgrade.json, downloads, the daemon's socket)")
    paths = up.add_argument_group("where this box keeps things (for tests and unusual images)")
    paths.add_argument("--grubenv", type=Path, default=GRUBENV)
    paths.add_argument("--keys-dir", type=Path, default=KEYS_DIR)
    paths.add_argument("--release-file", type=Path, default=RELEASE_FILE)
    paths.add_argument("--partlabel-dir", type=Path, default=PARTLABEL_DIR)
    paths.add_argument("--cmdline", type=Path, default=CMDLINE)
    return up


def _box(args: argparse.Namespace):
    from nsg.upgrade.install import Box

    return Box(grubenv=args.grubenv, cmdline=args.cmdline, release=args.release_file, keys_dir=args.keys_dir,
               state_dir=args.state_dir, partlabel_dir=args.partlabel_dir)


def run(args: argparse.Namespace, *, reboot: Callable[[], None] | None = None) -> int:
    from nsg.upgrade.errors import UpgradeError

    try:
        if args.source == "status":
            return _status(args)
        if args.json:
            print("nsg: upgrade: --json goes with status", file=sys.stderr)
            return 2
        if args.source == "settle":
            return _settle(args)
        return _install(args, reboot or _systemctl_reboot)
    except UpgradeError as exc:
        print(f"nsg: upgrade: {exc} [{exc.fault}: {exc.code}]", file=sys.stderr)
        return 1


def _status(args: argparse.Namespace) -> int:
    from nsg.upgrade.install import upgrade_report

    rep = upgrade_report(_box(args))
    if args.json:
        print(json.dumps(rep.model_dump(mode="json"), indent=2))
        return 0
    for slot in ("a", "b"):
        tags = [t for t, on in (("booted", slot == rep.booted_slot), ("committed", slot == rep.committed_slot),
                                ("armed: boots once at the next reboot", slot == rep.armed_slot)) if on]
        print(f"slot {slot}: {rep.slot_versions.get(slot) or 'unknown'}" + (f" ({', '.join(tags)})" if tags else ""))
    print(f"state: {rep.state}")
    a = rep.last_attempt
    if a is not None:
        print(f"last attempt: {a.from_version} (slot {a.from_slot}) -> {a.target_version} (slot {a.target_slot}), "
              f"{a.phase} {_when(a.updated)}" + (f": {a.reason}" if a.reason else ""))
    if rep.refused:
        print("refused: " + ", ".join(f"{code} {n}" for code, n in sorted(rep.refused.items())))
    if rep.last_refusal is not None:
        print(f"last refusal {_when(rep.last_refusal.at)}: {rep.last_refusal.message}")
    return 0


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _settle(args: argparse.Namespace) -> int:
    import asyncio

    from nsg.upgrade.health import control_socket_probe, settle, systemctl_reboot

    done = asyncio.run(settle(_box(args), control_socket_probe(args.state_dir), systemctl_reboot,
                              default_commit_after_s=args.commit_after))
    print(f"{done.state}: {done.outcome}" + (f" ({done.detail})" if done.detail else ""))
    return 0


def _install(args: argparse.Namespace, reboot: Callable[[], None]) -> int:
    from nsg.upgrade.download import download
    from nsg.upgrade.errors import UpgradeError
    from nsg.upgrade.install import count_refusal, install

    box = _box(args)
    progress = _Progress()
    path, fetched = Path(args.source), False
    if "://" in args.source:
        ca = args.ca
        if ca is None and (args.state_dir / "identity" / "controller-ca.pem").is_file():
            ca = args.state_dir / "identity" / "controller-ca.pem"
        try:
            path = download(args.source, args.state_dir / "upgrade", cafile=ca,
                            progress=lambda n, total: progress("download", n, total))
            fetched = True
        except UpgradeError as exc:
            count_refusal(box, exc, time.time())
            raise
    try:
        done = install(path, box, allow_downgrade=args.allow_downgrade, commit_after_s=args.commit_after,
                       progress=progress)
    finally:
        if fetched:
            path.unlink(missing_ok=True)
    m = done.manifest
    print(f"{done.what}: slot {done.slot} ({done.device}) holds {m.model} {m.version}, verified (signed by "
          f"{done.key_file}, key {done.key_id}) and armed to boot once; it is committed when healthy within "
          f"{args.commit_after:g} s, else the box falls back")
    if args.no_reboot:
        print("reboot to try it")
        return 0
    print("rebooting")
    sys.stdout.flush()
    reboot()
    return 0


class _Progress:
    """'verify: 40%' on a terminal's stderr, every 10 %, one line per stage."""

    def __init__(self) -> None:
        self.shown: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if total <= 0 or not sys.stderr.isatty():
            return
        pct = done * 100 // total
        if pct // 10 != self.shown.get(stage, -10) // 10 or done == total:
            self.shown[stage] = pct
            print(f"\r{stage}: {pct}%", end="\n" if done == total else "", file=sys.stderr, flush=True)


def _systemctl_reboot() -> None:
    subprocess.run(["systemctl", "reboot"], check=False)


def main(argv: list[str] | None = None, **kw) -> int:
    """`nsg upgrade ...` on its own (tests; nsg/cli.py wires the same parser into `nsg`)."""
    p = argparse.ArgumentParser(prog="nsg")
    add_parser(p.add_subparsers(dest="cmd", required=True))
    return run(p.parse_args(argv), **kw)
