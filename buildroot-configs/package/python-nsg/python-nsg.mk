################################################################################
#
# python-nsg
#
################################################################################

# nsg is built from the project tree this BR2_EXTERNAL lives in (its
# parent directory), not from a release tarball: firmware and daemon
# move together. To build another checkout, set
# PYTHON_NSG_OVERRIDE_SRCDIR in a local.mk (see the Buildroot manual).
PYTHON_NSG_SITE = $(realpath $(BR2_EXTERNAL_NSG_PATH)/..)
PYTHON_NSG_SITE_METHOD = local
PYTHON_NSG_VERSION = $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' $(PYTHON_NSG_SITE)/pyproject.toml)
PYTHON_NSG_SETUP_TYPE = setuptools
PYTHON_NSG_LICENSE = Apache-2.0
PYTHON_NSG_LICENSE_FILES = LICENSE

# Local sources are rsync'ed whole: keep the developer's virtualenv,
# build outputs (a Buildroot O= under build/ included), tests and
# this tree itself out of the package build directory.
PYTHON_NSG_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--exclude /.venv \
	--exclude /build \
	--exclude /output \
	--exclude /buildroot-configs \
	--exclude /tests \
	--exclude /bench \
	--exclude /docs \
	--exclude '*.egg-info' \
	--exclude __pycache__ \
	--exclude .hypothesis \
	--exclude .pytest_cache \
	--exclude .ruff_cache

define PYTHON_NSG_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(PYTHON_NSG_PKGDIR)/nsg.service \
		$(TARGET_DIR)/usr/lib/systemd/system/nsg.service
endef

$(eval $(python-package))
