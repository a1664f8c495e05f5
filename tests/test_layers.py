"""docs/architecture.md's claims about imports, checked against the code.

Every ``import`` statement of every module under wds_pipeline/ is read with ``ast`` (module
level, inside functions and under ``TYPE_CHECKING`` alike: a lazy import is still a
dependency); the layer table of the doc is parsed from the doc itself, so the doc and this
test cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "wds_pipeline"
DOC = REPO / "docs" / "architecture.md"

# Imports allowed to point up a layer: none (train/cli.py took its Ctrl-C exit status
# from cli.py until the exit statuses moved to errors.py).
UPWARD: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _rel(module: str) -> str:
    """wds_pipeline.loader.dataset -> loader/dataset.py; a package -> its __init__.py."""
    return MODULES[module].relative_to(PKG).as_posix()


def _imports_of_node(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The wds_pipeline modules one import statement of ``module`` imports (``from pkg
    import name`` counts as the submodule ``pkg.name`` where that is a module, else ``pkg``)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES} - {module}
    if node.level:
        path = MODULES[module]
        package = (module if path.name == "__init__.py" else module.rpartition(".")[0]).split(".")
        target = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "wds_pipeline":
        return set()
    found = {f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names}
    assert found <= set(MODULES), f"{module} imports a module that does not exist: {found - set(MODULES)}"
    return found - {module}


def _imports(module: str) -> set[str]:
    """Every wds_pipeline module ``module`` imports, wherever the statement is."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    return {dep for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
            for dep in _imports_of_node(module, node)}


IMPORTS = {m: _imports(m) for m in MODULES}


def _unit(module: str) -> str:
    """The layer table's unit of a module: its top-level package (``loader/``) or module
    (``index.py``); the package's own ``__init__.py`` is the public API, a unit of its own."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__.py"
    return f"{parts[1]}/" if MODULES.get(".".join(parts[:2]), Path()).name == "__init__.py" else f"{parts[1]}.py"


def _layers() -> dict[str, int]:
    """unit -> layer number, from the doc's table rows ``| N name | `unit` ... |``."""
    text = DOC.read_text()
    table = text.split("<!-- layers -->")[1].split("\n\n")[0]  # the table after the marker
    layers: dict[str, int] = {}
    for row in re.findall(r"^\| (\d+) [^|]*\| ([^|]*)\|", table, re.M):
        for unit in re.findall(r"`([^`]+)`", row[1]):
            assert unit not in layers, f"{unit} is in two layers of the doc's table"
            layers[unit] = int(row[0])
    return layers


def _edges() -> list[tuple[str, str]]:
    return [(a, b) for a in MODULES for b in IMPORTS[a]]


def test_every_unit_is_in_exactly_one_layer_of_the_doc():
    assert set(_layers()) == {_unit(m) for m in MODULES}


def test_imports_point_down_or_across_a_layer_never_up():
    layers = _layers()
    up = sorted((_rel(a), _rel(b)) for a, b in _edges() if layers[_unit(b)] > layers[_unit(a)])
    assert set(up) == UPWARD, up


def test_no_import_circle_between_units():
    """Across a layer is allowed only without a circle: the units form a DAG (imports
    listed in UPWARD aside: none)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in _edges():
        if _unit(a) != _unit(b) and (_rel(a), _rel(b)) not in UPWARD:
            graph[_unit(a)].add(_unit(b))
    assert _circle(graph) is None, f"import circle: {' -> '.join(_circle(graph) or [])}"


def test_no_import_circle_between_modules():
    """Lazy imports included: no module needs, directly or through others, a module that
    needs it (imports listed in UPWARD aside: none)."""
    graph = {m: {d for d in IMPORTS[m] if (_rel(m), _rel(d)) not in UPWARD} for m in MODULES}
    circle = _circle(graph)
    assert circle is None, f"import circle: {' -> '.join(_rel(m) for m in circle or [])}"


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (a -> what a imports), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for dep in sorted(graph.get(node, ())):
            found = visit(dep, path + [node])
            if found:
                return found
        done.add(node)
        return None

    for node in sorted(graph):
        found = visit(node, [])
        if found:
            return found
    return None


def _reach(prefix: str) -> set[str]:
    """The units the modules of ``prefix`` import (their own unit left out)."""
    return {_unit(b) for a, b in _edges() if _unit(a) == prefix and _unit(b) != prefix}


def test_the_read_path_imports_only_storage_and_errors():
    assert _reach("readpath/") <= {"storage/", "errors.py"}


def test_storage_imports_nothing_above_it():
    assert _reach("storage/") <= {"errors.py"}


def test_the_loader_imports_no_build_side_and_no_training_code():
    assert not _reach("loader/") & {"audio/", "builder/", "sources/", "synth/", "train/", "cli.py",
                                    "demo.py", "verify.py", "shard_writer.py", "option_table.py",
                                    "testing.py"}


def test_transforms_import_only_errors_and_typedconfig():
    assert _reach("transforms/") <= {"errors.py", "typedconfig.py"}


def test_only_the_entry_points_import_the_trainer():
    users = {_unit(a) for a, b in _edges() if _unit(b) == "train/" and _unit(a) != "train/"}
    assert users <= {"cli.py", "demo.py"}, users


def test_the_build_side_imports_no_loader_and_no_trainer():
    for unit in ("builder/", "sources/", "audio/", "synth/"):
        assert not _reach(unit) & {"loader/", "train/", "readpath/", "transforms/"}, unit


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_is_named_in_the_doc(module):
    assert f"`{_rel(module)}`" in DOC.read_text(), f"docs/architecture.md does not name `{_rel(module)}`"


def test_every_top_level_folder_is_named_in_the_doc():
    skip = {"build", "dist", "demo"}  # outputs (.gitignore)
    folders = sorted(p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
                     and not p.name.endswith(".egg-info") and p.name not in skip)
    text = DOC.read_text()
    assert [f for f in folders if f"`{f}/`" not in text] == []
