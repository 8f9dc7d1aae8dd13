"""Safe A/B upgrades (issue 15 section 2): signed bundles, written to the inactive root slot, booted
once, committed only when the box is healthy, otherwise fallen back from by the boot loader itself.

The disk contract (image/layout.py writes it): GPT partitions nsg-bios, nsg-esp (FAT, /boot/efi, GRUB
env block at /grub/grubenv), nsg-root-a, nsg-root-b (ext4 root slots, read-only), nsg-data
(/var/lib/nsg). GRUB env ``nsg_slot`` = the committed slot, ``nsg_try`` = a slot to boot once, cleared by
grub.cfg with save_env before it boots it. The kernel command line says ``nsg.slot=a|b``.

How, and why each choice:

- **One signature over a small manifest that pins the image's SHA-256** (bundle.py): verifying costs one
  ECDSA P-256 check however large the image; the manifest comes first in an uncompressed tar, so the
  signature is checked before anything else is read and the manifest's JSON is parsed only once it
  verified. Release public keys are a directory in the image, so keys rotate across releases.
- **A version policy with one number per release** (policy.py): ``min_version`` is the lower end of a
  release's compatibility window. A newer bundle installs only over min_version or newer; an older one
  (or the same) only with --allow-downgrade, and never below the running release's min_version: that
  floor is the anti-rollback rule (old bundles stay validly signed forever).
- **Nothing changes before the whole bundle verified** (install.py): pass 1 checks the signature, model,
  version and the image's hash without writing; pass 2 writes the inactive slot while hashing again;
  then fsync and a read-back from the device. Only then is ``nsg_try`` set. A bad bundle leaves the box
  as it was except for a counted refusal; a power cut at any point boots the old slot.
- **The GRUB env is rewritten in place, one sector** (grubenv.py), as GRUB's save_env does: on FAT a
  rename is not atomic across a power cut; a single sector write is.
- **A record on the data partition** (record.py, upgrade.json) tells the boot after a failed trial what
  was tried and how far it got (never booted, crashed, unhealthy, interrupted while writing), for
  `nsg upgrade status` and the controller; refusals are counted by code.
- **Pure state** (slots.py): from (env, booted slot, record), the state (committed, armed, trial,
  fell-back, interrupted), the env edits and the report; table-tested.
- **Commit on health** (health.py): once per boot; a trial commits when the probe (daemon up, controller
  channel established) says so within ``commit_after_s``, else it clears nsg_try and reboots.
- **https only, verified TLS, to disk first** (download.py), then the same install as for a file.

- **The controller asks, the box decides** (agent.py, driven by nsg/subsystems/upgrade.py): the config's
  ``upgrade`` section names a release and its bundles; the daemon's agent installs it when the box runs
  another, never retries a version that failed here by itself, and reports to the controller
  (docs/upgrades.md).

Modules: errors, paths, grubenv, manifest, policy, bundle, record, slots, writer, install, health,
download, agent, cli (`nsg upgrade`). The build side (keys, signing, `make bundle`) is image/bundle.py.
"""
