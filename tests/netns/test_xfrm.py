"""The XFRM backend's messages against this kernel: it takes policies and refuses ESP
states only for want of the algorithm (so the state message itself parsed).
The full ESP path of this backend is tested in the firmware image VM."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

from tests.conftest import sh


def test_xfrm_messages_against_the_kernel(netns_name):
    p = subprocess.run(["ip", "netns", "exec", netns_name, sys.executable, "-m", "tests.netns.helpers.xfrm_probe"],
                       capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["probe"] is False  # this kernel has no ESP: the engine chooser must pick userspace
    # A well-formed state gets past the kernel's structural checks (verify_newsa_info)
    # and fails only where the AEAD transform is looked up.
    assert out["sa"] == [errno.ENOSYS, "Requested AEAD algorithm not found"]
    assert out["truncated"][0] == errno.EINVAL
    assert out["tunnel"][0] == errno.ENOSYS
    assert out["policies"] == [
        [0, "198.19.255.2/32", "198.19.255.1/32", "198.18.2.2", "198.18.1.2", 7],
        [1, "198.19.255.1/32", "198.19.255.2/32", "198.18.1.2", "198.18.2.2", 7],
        [2, "198.19.255.2/32", "198.19.255.1/32", "198.18.2.2", "198.18.1.2", 7],
    ]
    assert out["duplicate_policy"] == errno.EEXIST
    assert out["after_delete"] == 2
    # iproute2 reads the same policies back (an independent reader)
    text = sh("ip", "-n", netns_name, "xfrm", "policy", "show")
    assert "src 198.19.255.2/32 dst 198.19.255.1/32" in text and "dir fwd" in text
    assert "tmpl src 198.18.2.2 dst 198.18.1.2" in text and "proto esp reqid 7 mode tunnel" in text
