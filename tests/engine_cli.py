"""Helpers shared by the --engine tests of the core and of the solvers."""
import ast
from pathlib import Path

from app.cli import main
from perfmodel import engines

KNOWN = engines.names()


def run(capsys, *argv):
    """Exit code, stdout and stderr of one `perfmodel` command."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_unknown_engine(code, err, value="nope", context=None):
    """An unknown engine is one line naming --engine, the value and the known profiles; exit 2."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (context, err)
    assert "--engine" in lines[0] and repr(value) in lines[0], context
    assert all(name in lines[0] for name in KNOWN), context


def pricing_functions_without_engine(root: Path, pricers: set, exempt: set) -> list[str]:
    """"file:function" of every top-level function under `root` that calls one of `pricers` but
    takes no `engine` parameter, nor a `route` (perfmodel.fastpath.Route, which carries the engine
    its pricings were made for), apart from the (file, function) pairs in `exempt`."""
    missing = []
    for path in sorted(root.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.FunctionDef) or (path.name, node.name) in exempt:
                continue
            calls = {c.func.attr if isinstance(c.func, ast.Attribute) else getattr(c.func, "id", None)
                     for c in ast.walk(node) if isinstance(c, ast.Call)}
            args = [a.arg for a in node.args.args + node.args.kwonlyargs]
            if calls & pricers and "engine" not in args and "route" not in args:
                missing.append(f"{path.name}:{node.name}")
    return missing
