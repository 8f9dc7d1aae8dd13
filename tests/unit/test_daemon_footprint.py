"""The daemon's imports stay lean (the appliance budgets 80 MB of RSS for it at idle): pyroute2's
package __init__ (its whole API, 163 modules) is not run by the daemon, and other users of pyroute2
in the same process still get the whole API (nsg/dataplane/pyroute2_light.py)."""

import json
import subprocess
import sys

PROBE = """
import json, sys
import nsg.daemon, nsg.cli
from nsg.dataplane import pyroute2_light
out = {"light": pyroute2_light.is_light(), "ndb": "pyroute2.ndb.main" in sys.modules,
       "ipdb": "pyroute2.ipdb" in sys.modules, "plan9": "pyroute2.plan9.server" in sys.modules}
from pyroute2 import NDB, IPRoute
import pyroute2.iproute.linux as linux
out["full_after_ask"] = not pyroute2_light.is_light() and IPRoute is linux.IPRoute and NDB is not None
print(json.dumps(out))
"""


def test_the_daemon_does_not_load_pyroute2s_whole_api():
    p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out == {"light": True, "ndb": False, "ipdb": False, "plan9": False, "full_after_ask": True}, out
