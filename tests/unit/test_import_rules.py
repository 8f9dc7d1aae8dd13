"""DESIGN.md's layering rules, checked on the source (ast, no imports executed).

- bootstrap, ipsec, containers never import nsg, controller or lab;
- controller imports only pure modules of nsg (models, wire formats, codecs);
- in each package, OS interfaces (pyroute2, docker) are imported by one adapter module only.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("nsg", "bootstrap", "ipsec", "containers", "controller", "lab")
LEAF_PACKAGES = ("bootstrap", "ipsec", "containers")
OS_INTERFACES = ("pyroute2", "docker")
# Modules of nsg the controller may use: pure models, wire formats, codecs.
NSG_PURE_FOR_CONTROLLER = (
    "nsg.model", "nsg.channel.wire",
    # the BGP/EVPN library: codecs and the session machine are pure; speaker.py is the one asyncio
    # driver of that library (no daemon state), which the controller's route reflector reuses
    "nsg.evpn.codec", "nsg.evpn.attributes", "nsg.evpn.capabilities", "nsg.evpn.constants", "nsg.evpn.errors",
    "nsg.evpn.evpn_nlri", "nsg.evpn.fsm", "nsg.evpn.speaker",
)


def modules(pkg: str):
    base = ROOT / pkg
    if not base.is_dir():
        return
    for path in sorted(base.rglob("*.py")):
        yield path, ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from a.b import c" may import the module a.b.c: record the full dotted name
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def test_leaf_packages_do_not_import_the_daemon_controller_or_lab():
    bad = []
    for pkg in LEAF_PACKAGES:
        for path, mod in modules(pkg):
            bad += [f"{mod} imports {i}" for i in imports(path) if top(i) in ("nsg", "controller", "lab")]
    assert bad == []


def test_controller_uses_only_pure_nsg_modules():
    bad = []
    for path, mod in modules("controller"):
        for i in imports(path):
            if top(i) == "nsg" and not i.startswith(NSG_PURE_FOR_CONTROLLER):
                bad.append(f"{mod} imports {i}")
            if top(i) == "lab":
                bad.append(f"{mod} imports {i}")
    assert bad == []


def test_one_adapter_module_per_package_touches_the_os():
    users: dict[tuple[str, str], set[str]] = defaultdict(set)
    for pkg in PACKAGES:
        for path, mod in modules(pkg):
            for i in imports(path):
                if top(i) in OS_INTERFACES:
                    # subpackages count separately: nsg.dataplane and nsg.channel each get one adapter
                    group = ".".join(mod.split(".")[:2]) if mod.count(".") >= 2 else pkg
                    users[(group, top(i))].add(mod)
    many = {k: v for k, v in users.items() if len(v) > 1}
    assert many == {}
    assert users[("nsg.dataplane", "pyroute2")] == {"nsg.dataplane.netlink"}


def test_the_rules_see_violations(tmp_path, monkeypatch):
    """The checker itself must be able to fail."""
    (tmp_path / "ipsec").mkdir()
    (tmp_path / "ipsec" / "bad.py").write_text("from nsg.model import GatewayConfig\nimport pyroute2\n")
    (tmp_path / "ipsec" / "bad2.py").write_text("import pyroute2.netlink\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    bad = [i for path, _ in modules("ipsec") for i in imports(path)]
    assert "nsg.model.GatewayConfig" in bad and "pyroute2" in bad
    try:
        test_leaf_packages_do_not_import_the_daemon_controller_or_lab()
    except AssertionError:
        pass
    else:
        raise AssertionError("leaf rule did not fire")
