"""What every lab benchmark's main() does around its measurement, in one place (bench/evpn.py,
bench/evpn_flood.py): refuse to start without root or without its tools, with the reason as the JSON
line; turn SIGINT, SIGTERM and SIGHUP into KeyboardInterrupt, so that the lab's ``finally`` blocks tear
the namespaces and processes down whichever way the run ends; a fresh work directory, removed unless
``--keep``; and, whatever happened, exactly one JSON object on the last line of stdout (the result, or
{"bench", "error"}), with the exit status saying which (0, 1 failed, 2 could not start, 130 interrupted).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

Run = Callable[[argparse.Namespace, Path], dict]


def interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def bench_main(name: str, args: argparse.Namespace, run: Run,
               unavailable: Callable[[], str | None] = lambda: None) -> int:
    """Run ``run(args, workdir)`` for bench ``name`` (``bench/<name>.py``) as described above.
    ``unavailable`` says what the host lacks for it (checked once root is), or None; ``args.keep``
    keeps the work directory."""
    if os.geteuid() != 0:
        print(json.dumps({"bench": name, "error": "needs root (network namespaces)"}))
        return 2
    missing = unavailable()
    if missing:
        print(json.dumps({"bench": name, "error": missing}))
        return 2
    # SIGINT too: a shell without job control starts background jobs with SIGINT ignored
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    workdir = Path(tempfile.mkdtemp(prefix=f"nsg-bench-{name.replace('_', '-')}-"))
    t = time.monotonic()
    status = 0
    try:
        result = run(args, workdir)
        result["bench_s"] = round(time.monotonic() - t, 1)
    except KeyboardInterrupt:
        result, status = {"bench": name, "error": "interrupted"}, 130
    except Exception as exc:  # noqa: BLE001 - whatever broke, the last line is still one JSON object
        traceback.print_exc()
        result, status = {"bench": name, "error": f"{type(exc).__name__}: {exc}"[-2000:]}, 1
    finally:
        if args.keep:
            print(f"bench/{name}.py: work directory kept: {workdir}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))
    return status
