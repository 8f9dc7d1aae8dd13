"""pyroute2 without its package __init__: imported for its effect, before any ``pyroute2`` import.

pyroute2's ``__init__`` imports its whole public API on ``import pyroute2`` (IPDB, NDB, conntrack,
wireless, IPVS, plan9, sqlite for NDB: 163 modules where IPRoute needs 99; 5.4 MB of the RSS of a
gateway daemon whose idle budget on the appliance is 80 MB). nsg needs IPRoute and the netlink
constants only. So the package is registered here without running its ``__init__``: submodules
(``pyroute2.iproute.linux``, ``pyroute2.netlink...``) import as usual, and the first other name asked
of the package itself (``from pyroute2 import NDB``) runs the real ``__init__`` then (PEP 562 module
``__getattr__``), so any other user of pyroute2 in the same process still gets all of it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType


def register() -> None:
    if "pyroute2" in sys.modules:  # already imported (fully or by us): nothing to save any more
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not installed as a package: the ordinary import will say so
    mod = importlib.util.module_from_spec(spec)  # __path__ and __spec__ set, __init__ not run
    loaded = False

    def __getattr__(name: str):
        nonlocal loaded
        if name.startswith("__") and name != "__version__":
            raise AttributeError(name)  # introspection (copy, inspect, mock) need not load the API
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:  # `from pyroute2 import config`
            return importlib.import_module(f"pyroute2.{name}")
        if loaded:
            raise AttributeError(f"module 'pyroute2' has no attribute {name!r}")
        loaded = True
        spec.loader.exec_module(mod)  # the real __init__, into this same module object
        try:
            return mod.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'pyroute2' has no attribute {name!r}") from None

    mod.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["pyroute2"] = mod


def is_light(mod: ModuleType | None = None) -> bool:
    """True while pyroute2's full API has not been loaded (for the test that keeps it so)."""
    mod = mod or sys.modules.get("pyroute2")
    return mod is not None and "IPDB" not in mod.__dict__


register()
