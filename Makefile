# nsg: `make test` sets up a fresh Debian 12 machine (as root) and runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_LIST := deps/apt-packages.txt

.PHONY: setup apt venv test lint unit demo demo-down clean bundle buildroot-check image image-test

setup: apt venv

# Install whatever in deps/apt-packages.txt is missing (one list, one place).
apt:
	@missing=$$(grep -v '^\s*#' $(APT_LIST) | grep -v '^\s*$$' | while read -r p; do \
	    dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -q 'install ok installed' || echo "$$p"; done); \
	if [ -n "$$missing" ]; then \
	    echo "apt: installing" $$missing; \
	    if [ "$$(id -u)" != 0 ]; then echo "apt: need root to install: $$missing" >&2; exit 1; fi; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml deps/python-constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c deps/python-constraints.txt -e '.[test]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check .

unit: venv
	$(PY) -m pytest -q tests/unit

# buildroot-configs/ against Buildroot's own tree (also part of `make test`): defconfig, savedefconfig,
# show-info, check-package, and the A/B disk layout booted in qemu
buildroot-check: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/build

# The whole suite. It builds the appliance image once (as root, ~2 min; tests/e2e/appliance/image.py) and
# boots it in qemu for the appliance lab (tests/e2e/appliance); the boots only tests/image makes are left
# to `make image-test` (marker image_boots).
test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 tests -m "not image_boots"

demo: setup
	$(VENV)/bin/nsg-lab demo --name demo

demo-down: venv
	$(VENV)/bin/nsg-lab down --name demo

clean:
	rm -rf $(VENV) build *.egg-info

# The appliance image (image/README.md): build/nsg-<version>-x86_64.img, a raw GPT A/B disk from Debian 12
# packages, and its slot-a root filesystem build/nsg-<version>-rootfs.img (what `make bundle` signs). As root.
image: venv
	$(PY) -m image.build --version $(NSG_VERSION) --model $(MODEL) $(foreach k,$(RELEASE_PUB),--release-key $(k))

# The image booted in qemu: tests/image (SeaBIOS, OVMF on q35, trial slots) and the appliance lab
# (tests/e2e/appliance). NSG_IMAGE=FILE (and NSG_RELEASE_KEY=ITS-RELEASE.key) to test one already built.
image-test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/image tests/e2e/appliance

# A signed upgrade bundle (nsg/upgrade/, image/bundle.py): a root slot's ext4 image + manifest, signed
# with the manufacturer's release key. RELEASE_KEY (`python -m image.bundle keygen`) and MIN_VERSION
# (the oldest release that may install it) are required.
MODEL ?= nsg-atom-x86_64
NSG_VERSION ?= $(shell $(PY) -c 'import nsg; print(nsg.__version__)' 2>/dev/null)
ROOTFS ?= build/nsg-$(NSG_VERSION)-rootfs.img
BUNDLE ?= build/nsg-$(NSG_VERSION)-$(MODEL).nsgb
bundle: venv
	@test -n "$(RELEASE_KEY)" || { echo "make bundle: RELEASE_KEY=FILE.pem is required" >&2; exit 2; }
	@test -n "$(MIN_VERSION)" || { echo "make bundle: MIN_VERSION=X.Y.Z is required" >&2; exit 2; }
	$(PY) -m image.bundle make --rootfs $(ROOTFS) --version $(NSG_VERSION) --min-version $(MIN_VERSION) \
	    --model $(MODEL) --key $(RELEASE_KEY) --build "$$(git describe --always --dirty)" --out $(BUNDLE)

# Prove deps/apt-packages.txt in a clean Debian 12 root (mmdebstrap, minbase + exactly that list, under
# /var/tmp, removed afterwards): the venv recipe above, every peer's presence, then with CI=true the unit
# tests, all interop tests (strongSwan, FRR, GoBGP, pki) and the qemu guest test. As root; ~3 minutes.
# Knobs: see deps/fresh_root.sh (FRESH_TESTS, FRESH_KEEP, ...).
.PHONY: fresh-check
fresh-check:
	bash deps/fresh_root.sh
