"""DESIGN.md's layering rules, checked on the source (ast, no imports executed), with no whitelist.

Every ``import`` and ``from ... import`` counts, at any depth (function-level lazy imports and
``if TYPE_CHECKING:`` blocks too): a lazy import is still a dependency. The rules, per top-level package:

- ``bgp``, ``bootstrap``, ``ipsec``, ``containers`` are libraries: they never import ``nsg``,
  ``controller`` or ``lab``;
- ``octets`` (the bounds-checked reader ``bgp`` and ``ipsec`` share) imports nothing of this project,
  so that every library can use it;
- ``controller`` may import ``bgp`` and the schema of ``nsg`` (``nsg.model``, ``nsg.channel.wire``:
  the channel's messages and their order; the upgrade bundle's format, ``nsg.upgrade.bundle`` and
  ``nsg.upgrade.manifest`` with the errors and paths they use: the controller verifies bundles before it
  serves them), nothing else of ``nsg``, not even through those modules; and never ``lab``;
- ``nsg`` composes the libraries and never imports ``controller`` or ``lab``;
- ``lab`` (namespace topologies for the demo, tests and benchmarks) is imported by none of the above;
- in each top-level package, an OS interface (pyroute2, docker) is imported by one adapter module only;
- no import cycle anywhere, between any two modules of the project's packages.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("bgp", "bootstrap", "ipsec", "containers")
SHARED = "octets"
# top-level package -> the top-level packages of this project it must never import (DESIGN.md "Layout")
FORBIDDEN = {
    **{lib: {"nsg", "controller", "lab", "image"} for lib in LIBRARIES},
    SHARED: {"nsg", "controller", "lab", "image", "tests", *LIBRARIES},  # below every library
    "nsg": {"controller", "lab", "image"},
    "controller": {"lab", "image"},
    "lab": set(),
    "image": {"controller", "lab"},  # the image builder: nsg's release side, never the controller's
}
# the schema of nsg, the only part of it the controller may use (with the packages above them)
NSG_SCHEMA = ("nsg.model", "nsg.channel.wire", "nsg.upgrade.bundle", "nsg.upgrade.manifest", "nsg.upgrade.errors",
              "nsg.upgrade.paths")
OS_INTERFACES = ("pyroute2", "docker")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the dotted name imported (a module, or a name inside one)
    line: int

    def __str__(self) -> str:
        return f"{self.source} imports {self.target} (line {self.line})"


def project_packages() -> list[str]:
    """The project's top-level packages: directories of ROOT with an __init__.py."""
    return sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())


def modules(pkg: str):
    """(path, dotted module name) of every module of a top-level package; a package is its __init__."""
    base = ROOT / pkg
    if not base.is_dir():
        return
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module: str) -> list[Import]:
    """Every import statement of a file, at any depth. ``from a.b import c`` records a.b.c (it may be
    the module a.b.c); relative imports are made absolute."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(module, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            found += [Import(module, f"{base}.{a.name}", node.lineno) for a in node.names if a.name != "*"]
            if any(a.name == "*" for a in node.names):
                found.append(Import(module, base, node.lineno))
    return found


def top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class Graph:
    """The project's modules and the module each import statement loads (the most specific one)."""

    def __init__(self, packages: list[str]):
        self.paths = {mod: path for pkg in packages for path, mod in modules(pkg)}
        self.edges: dict[str, dict[str, int]] = {mod: {} for mod in self.paths}  # module -> {module: line}
        for mod, path in self.paths.items():
            for imp in imports(path, mod):
                target = self.resolve(imp.target)
                if target is not None and target != mod:
                    self.edges[mod].setdefault(target, imp.line)

    def resolve(self, name: str) -> str | None:
        while name and name not in self.paths:
            name = name.rpartition(".")[0]
        return name or None

    def cycles(self) -> list[frozenset[str]]:
        """The strongly connected components of more than one module (Tarjan, iteratively)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        found = []
        for root in sorted(self.edges):
            if root in index:
                continue
            work = [(root, iter(sorted(self.edges[root])))]
            index[root] = low[root] = len(index)
            stack.append(root)
            on_stack.add(root)
            while work:
                node, children = work[-1]
                child = next(children, None)
                if child is not None:
                    if child not in index:
                        index[child] = low[child] = len(index)
                        stack.append(child)
                        on_stack.add(child)
                        work.append((child, iter(sorted(self.edges[child]))))
                    elif child in on_stack:
                        low[node] = min(low[node], index[child])
                    continue
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
        return found

    def describe(self, component: frozenset[str]) -> str:
        return "; ".join(f"{a} -> {b} ({self.paths[a].relative_to(ROOT)}:{line})"
                         for a in sorted(component) for b, line in sorted(self.edges[a].items()) if b in component)

    def reach(self, start: list[str]) -> dict[str, str | None]:
        """Every module loaded, directly or not, by importing ``start`` (each with the module that
        loaded it): importing a.b.c loads the packages a and a.b too."""
        seen: dict[str, str | None] = dict.fromkeys(start)
        todo = deque(start)
        while todo:
            mod = todo.popleft()
            parents = [".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 1)]
            for nxt in [*self.edges[mod], *(p for p in parents if p in self.paths)]:
                if nxt not in seen:
                    seen[nxt] = mod
                    todo.append(nxt)
        return seen


@pytest.fixture(scope="module")
def graph() -> Graph:
    return Graph(project_packages())


def test_every_top_level_package_has_its_rule():
    assert set(project_packages()) - {"tests"} == set(FORBIDDEN)


def layering_violations() -> list[str]:
    bad = []
    for pkg, forbidden in FORBIDDEN.items():
        for path, mod in modules(pkg):
            for imp in imports(path, mod):
                if top(imp.target) in forbidden:
                    bad.append(str(imp))
                elif pkg == "controller" and top(imp.target) == "nsg" and not under(imp.target, NSG_SCHEMA):
                    bad.append(f"{imp}: the controller may use only {', '.join(NSG_SCHEMA)} of nsg")
    return bad


def test_packages_import_only_what_their_layer_allows():
    assert layering_violations() == []


def controller_beyond_schema(graph: Graph) -> list[str]:
    """The modules of nsg the controller loads, directly or not, beyond the schema."""
    loaded = graph.reach([m for m in graph.paths if top(m) == "controller"])
    allowed = {"nsg", "nsg.channel", "nsg.upgrade"}  # the packages holding the schema: importing it loads them
    return sorted(f"{m} (loaded by {by})" for m, by in loaded.items()
                  if top(m) == "nsg" and m not in allowed and not under(m, NSG_SCHEMA))


def test_the_controller_reaches_nothing_of_nsg_beyond_its_schema(graph):
    """Not through the schema's own imports either (importing nsg.model loads nsg/__init__.py too)."""
    assert controller_beyond_schema(graph) == []


def os_interface_users() -> dict[tuple[str, str], set[str]]:
    """(top-level package, OS interface) -> the modules of that package importing it."""
    users: dict[tuple[str, str], set[str]] = defaultdict(set)
    for pkg in FORBIDDEN:
        for path, mod in modules(pkg):
            for imp in imports(path, mod):
                if top(imp.target) in OS_INTERFACES:
                    users[(pkg, top(imp.target))].add(mod)
    return users


def test_one_adapter_module_per_package_touches_the_os():
    users = os_interface_users()
    assert {k: sorted(v) for k, v in users.items() if len(v) > 1} == {}
    # the rule sees the adapters DESIGN.md names (so it cannot pass by seeing nothing)
    assert users[("nsg", "pyroute2")] == {"nsg.dataplane.netlink"}
    assert users[("containers", "docker")] == {"containers.docker_backend"}


def test_no_import_cycles(graph):
    assert [graph.describe(c) for c in graph.cycles()] == []


# --- the checkers themselves must be able to fail ---------------------------------------------------


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)

    def write(rel: str, text: str = "") -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for parent in path.relative_to(tmp_path).parents:
            if parent != Path(".") and not (tmp_path / parent / "__init__.py").exists():
                (tmp_path / parent / "__init__.py").write_text("")

    return write


def test_the_layering_rules_see_violations(fake_root):
    fake_root("ipsec/bad.py", "def lazy():\n    from nsg.model import GatewayConfig\n")
    fake_root("bgp/bad.py", "import controller.api\n")
    fake_root("octets/bad.py", "from bgp import codec\n")
    fake_root("nsg/bad.py", "import lab.netns\n")
    fake_root("controller/ok.py", "from nsg.model import GatewayConfig\nfrom nsg.channel import wire\nimport bgp\n"
                                  "from nsg.upgrade.bundle import verify_file\n")
    fake_root("controller/bad.py", "from nsg.evpn import control\nfrom nsg import daemon\n"
                                   "from nsg.upgrade.install import install\n")
    fake_root("lab/ok.py", "import nsg.daemon\nimport controller.api\n")
    bad = layering_violations()
    assert [b.split(" (")[0] for b in bad] == [
        "bgp.bad imports controller.api",
        "ipsec.bad imports nsg.model.GatewayConfig",
        "octets.bad imports bgp.codec",
        "nsg.bad imports lab.netns",
        "controller.bad imports nsg.evpn.control",
        "controller.bad imports nsg.daemon",
        "controller.bad imports nsg.upgrade.install.install",
    ]


def test_the_controller_closure_sees_the_schema_importing_more(fake_root):
    fake_root("nsg/model/__init__.py", "from nsg.model.config import X\n")
    fake_root("nsg/model/config.py", "def f():\n    from nsg.dataplane import types\n")
    fake_root("nsg/dataplane/types.py")
    fake_root("controller/api.py", "from nsg.model import X\n")
    assert controller_beyond_schema(Graph(project_packages())) == [
        "nsg.dataplane (loaded by nsg.dataplane.types)", "nsg.dataplane.types (loaded by nsg.model.config)"]


def test_the_adapter_rule_counts_per_top_level_package(fake_root):
    fake_root("nsg/dataplane/netlink.py", "from pyroute2 import IPRoute\n")
    fake_root("nsg/evpn/watch.py", "import pyroute2.netlink\n")
    fake_root("containers/docker_backend.py", "import docker\n")
    fake_root("containers/attach.py", "from pyroute2 import IPRoute\n")
    users = os_interface_users()
    assert users[("nsg", "pyroute2")] == {"nsg.dataplane.netlink", "nsg.evpn.watch"}
    with pytest.raises(AssertionError):
        test_one_adapter_module_per_package_touches_the_os()


def test_the_cycle_finder_sees_lazy_relative_and_long_cycles(fake_root):
    fake_root("ipsec/a.py", "from ipsec import b\n")
    fake_root("ipsec/b.py", "def later():\n    from . import c\n")
    fake_root("ipsec/c.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ipsec.a\n")
    fake_root("nsg/x.py", "import bgp.y\n")
    fake_root("bgp/y.py", "from nsg import x\n")
    fake_root("bgp/z.py", "import bgp.y\n")  # depends on a cycle, is not part of one
    g = Graph(project_packages())
    assert sorted(map(sorted, g.cycles())) == [["bgp.y", "nsg.x"], ["ipsec.a", "ipsec.b", "ipsec.c"]]
    assert "ipsec.b -> ipsec.c (ipsec/b.py:2)" in g.describe(frozenset({"ipsec.a", "ipsec.b", "ipsec.c"}))
    with pytest.raises(AssertionError):
        test_no_import_cycles(g)

