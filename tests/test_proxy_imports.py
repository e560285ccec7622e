"""The proxy's modules import one another in one direction only (front -> client ->
exchange -> upstream, headers, pages, ...), and none through the package ``__init__``.

Imports made only for type checking count too: a cycle there is a cycle in the design.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import tui_passenger.proxy

PACKAGE = "tui_passenger.proxy"
FOLDER = Path(tui_passenger.proxy.__file__).parent


def imported_modules(source: str, module: str) -> set[str]:
    """The modules of ``PACKAGE`` that ``source`` (the module named ``module``) imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.rsplit(".", node.level)[0]
                found.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                found.add(node.module)
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module name -> the package's modules it imports, for ``{module name: source}``."""
    return {module: imported_modules(source, module) for module, source in sources.items()}


def proxy_sources() -> dict[str, str]:
    """The source of every module of the proxy package, by module name."""
    sources = {}
    for path in sorted(FOLDER.glob("*.py")):
        name = PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"
        sources[name] = path.read_text(encoding="utf-8")
    return sources


def test_no_proxy_module_imports_the_package_init():
    graph = import_graph(proxy_sources())
    assert len(graph) > 5
    through_init = sorted(module for module, imports in graph.items()
                          if module != PACKAGE and PACKAGE in imports)
    assert through_init == []


def test_the_proxy_modules_import_each_other_without_a_cycle():
    graph = import_graph(proxy_sources())
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError if any
    assert order.index(f"{PACKAGE}.exchange") < order.index(f"{PACKAGE}.client") \
        < order.index(f"{PACKAGE}.front") < order.index(PACKAGE)


def test_a_cycle_is_found_also_through_a_type_checking_import():
    # The check itself: the shape the proxy had (client imported the package for its pages,
    # the package imports front, front imports client).
    sources = {
        PACKAGE: "from tui_passenger.proxy.front import FrontServer\n",
        f"{PACKAGE}.front": "from tui_passenger.proxy.client import ClientConnection\n",
        f"{PACKAGE}.client": "from typing import TYPE_CHECKING\n"
                             "if TYPE_CHECKING:\n    from tui_passenger.proxy import pages\n",
    }
    graph = import_graph(sources)
    assert graph[f"{PACKAGE}.client"] == {PACKAGE}
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError:
        return
    raise AssertionError("the cycle client -> package -> front -> client was not found")
