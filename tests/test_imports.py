"""The import structure, read from the source with ast (nothing is imported): no cycle between
modules, and no import against the layer order of DESIGN.md

    hardware, workloads  <  perfmodel  <  planning, serving  <  solvers  <  app

(a module imports only its own layer or lower ones); `validate` measures and writes specs, so it
may import hardware, workloads and perfmodel, and only `app` (and validate itself) imports it;
nothing imports `app`. Every import counts, including the ones inside functions: a lazy import
delays the dependency, it does not remove it.

Scripts shipped inside a package but outside its importable modules (files in folders without an
__init__.py: validate/reports/*/make_report.py, validate/diagnostics/*) are programs at the top of
the graph, like benchmarks/: nothing can import them, so they may import any package but `app`
(the bits report, for one, measures the solvers' allocations).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Layer of each top-level package: a module may import packages of its own layer or lower.
LAYERS = {"hardware": 0, "workloads": 0, "perfmodel": 1, "planning": 2, "serving": 2, "solvers": 3, "app": 4}
#: validate sits beside the layers: what it may import, and who may import it.
VALIDATE_IMPORTS = {"hardware", "workloads", "perfmodel", "validate"}
VALIDATE_IMPORTERS = {"app", "validate"}
PACKAGES = (*LAYERS, "validate")


def module_name(path: Path, root: Path) -> str:
    """Dotted name of the module at `path` (a package's __init__ is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path, packages) -> dict[str, Path]:
    """Every .py file under the given top-level package directories, by dotted module name (scripts
    in folders without an __init__, such as validate/reports/*, are named by their path the same way)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(path, root)] = path
    return found


def imported_names(path: Path, name: str) -> set[str]:
    """Dotted names this module's import statements ask for: `import a.b` gives a.b; `from a import b`
    gives a.b (import_graph reads it as a's submodule b, or else as a); relative imports are resolved
    against `name`."""
    is_package = path.name == "__init__.py"
    wanted = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            wanted.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[:len(here) - (node.level - 1)]
                base = ".".join(here + ([base] if base else []))
            wanted.update(f"{base}.{alias.name}" for alias in node.names)
    return wanted


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """module -> the modules of `packages` it imports. `from a import b` counts as importing a.b
    when that is a module, else a (the name b is defined in a); a package's own __init__ running
    before its submodules is Python's mechanics, not a dependency, and is not an edge."""
    modules = package_modules(root, packages)
    graph = {}
    for name, path in modules.items():
        edges = set()
        for wanted in imported_names(path, name):
            if wanted in modules:
                edges.add(wanted)
            elif wanted.rpartition(".")[0] in modules:  # `from pkg import function`
                edges.add(wanted.rpartition(".")[0])
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative),
    each sorted: every import cycle lies inside one of them."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start), on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child), on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def is_script(name: str, root: Path) -> bool:
    """A file in a folder without an __init__.py: run as a program, never imported as a module."""
    folder = root.joinpath(*name.split(".")[:-1])
    return folder != root and not (folder / "__init__.py").exists()


def upward_imports(graph: dict[str, set[str]], root: Path = ROOT) -> list[str]:
    """'importer -> imported' for every import against the layer order or the validate rules."""
    wrong = []
    for importer, imported in sorted(graph.items()):
        top = importer.split(".")[0]
        script = is_script(importer, root)
        for target in sorted(imported):
            goal = target.split(".")[0]
            if goal == top:
                continue
            if script or is_script(target, root):  # a script imports anything but app; none is imported
                allowed = goal != "app" and not is_script(target, root)
            elif top == "validate":
                allowed = goal in VALIDATE_IMPORTS
            elif goal == "validate":
                allowed = top in VALIDATE_IMPORTERS
            else:
                allowed = LAYERS[goal] <= LAYERS[top]
            if not allowed:
                wrong.append(f"{importer} -> {target}")
    return wrong


def test_the_packages_have_no_import_cycle():
    assert cycles(import_graph(ROOT)) == []


def test_no_module_imports_against_the_layer_order():
    assert upward_imports(import_graph(ROOT)) == []


def test_the_walk_sees_the_packages():
    """The graph is not empty by accident: it holds known modules and a known edge."""
    graph = import_graph(ROOT)
    assert {"hardware.spec", "perfmodel.predict", "planning.sweep", "solvers.bits", "app.cli"} <= set(graph)
    assert "perfmodel.predict" in graph["planning.sweep"]


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_deliberate_cycle_is_found(tmp_path):
    """Three modules of a synthetic package importing in a circle (one lazily, one relatively) are
    one cycle; the module outside it is not in it."""
    write_package(tmp_path, {
        "perfmodel/__init__.py": "",
        "perfmodel/a.py": "from perfmodel import b\n",
        "perfmodel/b.py": "from .c import thing\n",
        "perfmodel/c.py": "def thing():\n    import perfmodel.a\n",
        "perfmodel/d.py": "import perfmodel.a\n",
    })
    graph = import_graph(tmp_path, ["perfmodel"])
    assert graph["perfmodel.b"] == {"perfmodel.c"}
    assert cycles(graph) == [["perfmodel.a", "perfmodel.b", "perfmodel.c"]]


def test_a_deliberate_upward_import_is_found(tmp_path):
    """perfmodel importing solvers, and hardware importing validate, are refused; the downward
    imports beside them are not."""
    write_package(tmp_path, {
        "hardware/__init__.py": "", "hardware/spec.py": "import validate.bench\n",
        "perfmodel/__init__.py": "", "perfmodel/x.py": "import hardware.spec\nfrom solvers.kv import solve\n",
        "solvers/__init__.py": "", "solvers/kv.py": "from perfmodel import x\n",
        "validate/__init__.py": "", "validate/bench.py": "from perfmodel.x import y\n",
    })
    graph = import_graph(tmp_path, ["hardware", "perfmodel", "solvers", "validate"])
    assert upward_imports(graph, tmp_path) == ["hardware.spec -> validate.bench", "perfmodel.x -> solvers.kv"]
    # hardware.spec -> validate.bench -> perfmodel.x -> solvers.kv -> perfmodel.x -> hardware.spec
    assert cycles(graph) == [["hardware.spec", "perfmodel.x", "solvers.kv", "validate.bench"]]


@pytest.mark.parametrize("name, level, expected", [
    ("perfmodel.sub.mod", 1, "perfmodel.sub.other"), ("perfmodel.sub.mod", 2, "perfmodel.other")])
def test_relative_imports_resolve_against_the_module(tmp_path, name, level, expected):
    write_package(tmp_path, {"perfmodel/__init__.py": "", "perfmodel/sub/__init__.py": "",
                             "perfmodel/other.py": "", "perfmodel/sub/other.py": "",
                             "perfmodel/sub/mod.py": f"from {'.' * level}other import f\n"})
    assert import_graph(tmp_path, ["perfmodel"])[name] == {expected}


def test_a_script_may_import_solvers_but_not_app(tmp_path):
    """validate/reports/x/make_report.py (no __init__ beside it) is a program: solvers is allowed, app
    is not; the same import from an importable validate module is refused."""
    write_package(tmp_path, {
        "validate/__init__.py": "", "validate/bench.py": "import solvers.kv\n",
        "validate/reports/x/make_report.py": "import solvers.kv\nimport app.cli\n",
        "solvers/__init__.py": "", "solvers/kv.py": "", "app/__init__.py": "", "app/cli.py": "",
    })
    graph = import_graph(tmp_path, ["validate", "solvers", "app"])
    assert upward_imports(graph, tmp_path) == ["validate.bench -> solvers.kv",
                                               "validate.reports.x.make_report -> app.cli"]
