"""Every controller test runs as an operator with nothing set up: no token or URL in the environment,
and a config directory of its own (so a real ~/.config/nsg-controller/token never leaks in or out)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clean_operator(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    for var in ("NSG_CONTROLLER_TOKEN", "NSG_CONTROLLER_URL"):
        monkeypatch.delenv(var, raising=False)
