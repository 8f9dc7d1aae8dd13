"""Which valid bundles this box may install (pure).

``min_version`` is the lower end of a release's compatibility window: release R with min_version M
can take over the persistent state (/var/lib/nsg) of any release from M up, and leaves state that any
release from M up can read. So, for a box running R and a bundle B:

- B for another model: refused (its kernel, drivers and partition layout are not this box's);
- B newer than R (an upgrade): R must be at least B.min_version, else "install an intermediate
  release first" (B cannot migrate what R left);
- B not newer than R (a reinstall or a downgrade): refused unless the operator allows a downgrade, and
  refused even then when B is older than R.min_version. That floor is also the anti-rollback rule: an
  old bundle keeps its valid signature forever, and a release that fixes a security hole raises its
  min_version so that nobody can put the hole back, not even with --allow-downgrade.
"""

from __future__ import annotations

from nsg.upgrade.errors import PolicyRefused
from nsg.upgrade.manifest import Manifest, ReleaseInfo, Version


def check(bundle: Manifest, running: ReleaseInfo, *, allow_downgrade: bool = False) -> str:
    """Raise PolicyRefused naming the rule; return what the install is ("upgrade 1.2.0 -> 1.3.0")."""
    if bundle.model != running.model:
        raise PolicyRefused("wrong-model", f"bundle is for model {bundle.model}, this box is {running.model}")
    new, cur = Version(bundle.version), Version(running.version)
    if new > cur:
        if cur < Version(bundle.min_version):
            raise PolicyRefused("too-old-to-upgrade",
                                f"bundle {new} installs over {bundle.min_version} or newer; this box runs {cur}: "
                                f"install an intermediate release first")
        return f"upgrade {cur} -> {new}"
    floor = Version(running.min_version)
    if new < floor:
        raise PolicyRefused("below-min-version",
                            f"bundle {new} is older than {floor}, the oldest version the running release {cur} "
                            f"allows (its min_version); refused even with --allow-downgrade")
    if not allow_downgrade:
        what = "the same version as" if new == cur else "older than"
        raise PolicyRefused("downgrade", f"bundle {new} is {what} the running {cur}; --allow-downgrade installs it "
                                         f"(not below {floor})")
    return f"{'reinstall' if new == cur else 'downgrade'} {cur} -> {new}"
