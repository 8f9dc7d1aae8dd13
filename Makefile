# nsg: `make test` sets up a fresh Debian 12 machine (as root) and runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_LIST := deps/apt-packages.txt

.PHONY: setup apt venv test lint unit demo demo-down clean

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

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check .

unit: venv
	$(PY) -m pytest -q tests/unit

test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: setup
	$(VENV)/bin/nsg-lab demo --name demo

demo-down: venv
	$(VENV)/bin/nsg-lab down --name demo

clean:
	rm -rf $(VENV) build *.egg-info

# Prove deps/apt-packages.txt in a clean Debian 12 root (mmdebstrap, minbase + exactly that list, under
# /var/tmp, removed afterwards): the venv recipe above, every peer's presence, then with CI=true the unit
# tests, all interop tests (strongSwan, FRR, GoBGP, pki) and the qemu guest test. As root; ~3 minutes.
# Knobs: see deps/fresh_root.sh (FRESH_TESTS, FRESH_KEEP, ...).
.PHONY: fresh-check
fresh-check:
	bash deps/fresh_root.sh
