"""Script busybox udhcpc runs on each DHCP event (``-s``).

It configures nothing itself: it reports the event and the lease variables as one
line on stdout, which udhcpc shares with the nsg daemon that started it. The
daemon validates the lease and applies it through the dataplane reconciler.
"""

from __future__ import annotations

import json
import os
import sys

PREFIX = "NSG-LEASE "
KEYS = ("interface", "ip", "mask", "subnet", "router", "dns", "domain", "lease", "mtu", "serverid",
        "opt43", "opt143", "hostname")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    event = argv[0] if argv else ""
    env = {k: os.environ[k] for k in KEYS if k in os.environ}
    sys.stdout.write(PREFIX + json.dumps({"event": event, "env": env}) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
