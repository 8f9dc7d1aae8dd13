"""No import cycles in the ipsec package, counting every import: at module level, inside functions
(a lazy import hides a cycle from Python, not from the design) and under TYPE_CHECKING. In
particular sa.py imports exchanges.py and never the other way round: the exchanges see the IKE SA
through exchanges.Host, which IkeSa must keep providing."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from ipsec.ike import exchanges
from ipsec.ike.sa import IkeSa
from tests.unit.ike.simnet import A_ADDR, B_ADDR, psk_policies

ROOT = Path(__file__).resolve().parents[3]


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports (``from p import m`` imports p.m if that is one)."""
    mods = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for imported in names:
                n = imported
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n != name:
                    deps.add(n)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_ipsec_has_no_import_cycles():
    graph = import_graph(ROOT, "ipsec")
    assert "ipsec.ike.exchanges" in graph["ipsec.ike.sa"]
    assert "ipsec.ike.sa" not in graph["ipsec.ike.exchanges"]
    assert cycles(graph) == []


def test_the_check_sees_hidden_cycles(tmp_path):
    """A cycle closed by a lazy import or a TYPE_CHECKING one is found all the same."""
    pkg = tmp_path / "ipsec" / "ike"
    pkg.mkdir(parents=True)
    for d in (tmp_path / "ipsec", pkg):
        (d / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from ipsec.ike import b\n")
    (pkg / "b.py").write_text("def f():\n    from ipsec.ike.a import g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ipsec.ike.d import X\n")
    (pkg / "d.py").write_text("import ipsec.ike.c\n")
    assert cycles(import_graph(tmp_path, "ipsec")) == [["ipsec.ike.a", "ipsec.ike.b"], ["ipsec.ike.c", "ipsec.ike.d"]]


def test_ike_sa_provides_what_the_exchanges_use():
    sa = IkeSa(psk_policies()[0], A_ADDR, B_ADDR, initiator=True)
    for name in exchanges.Host.__annotations__:
        assert hasattr(sa, name), name
    methods = [n for n, v in vars(exchanges.Host).items() if inspect.isfunction(v) and not n.startswith("_")]
    assert "go" in methods and "add_child" in methods
    for name in methods:
        want = list(inspect.signature(getattr(exchanges.Host, name)).parameters)
        assert list(inspect.signature(getattr(IkeSa, name)).parameters) == want, name
