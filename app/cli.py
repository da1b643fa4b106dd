"""The `perfmodel` command line: the top of the one-way import graph, like the Streamlit app.

Each command group lives in its package's `commands` module with a `register(subparsers)` function;
heavy dependencies (cvxpy, torch, streamlit, dask) are imported inside handlers so that
`perfmodel predict` starts fast on a core install. Bad input exits with code 2 and one line naming
the field and value (no traceback).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from hardware.spec import SpecError
from hardware.units import UnitError
from workloads.model import ModelError
from workloads.scenario import ScenarioError

#: Modules that add subcommands; each defines register(subparsers). Listed here, not discovered,
#: so the command set is explicit. A module whose optional dependencies are missing still
#: registers: it imports them only when its command runs.
COMMAND_MODULES = (
    "perfmodel.commands",
    "perfmodel.sweep_commands",
    "validate.commands",
    "app.commands",
    "solvers.kv_commands",
    "solvers.offload_commands",
    "solvers.bits_commands",
)

USER_ERRORS = (SpecError, UnitError, ModelError, ScenarioError, ValueError, FileNotFoundError, KeyError)

#: Optional dependencies and the extra that installs each (pyproject.toml).
EXTRAS = {"torch": "validate", "transformers": "validate", "cvxpy": "solvers", "highspy": "solvers",
          "streamlit": "app", "dask": "sweep", "distributed": "sweep", "pyarrow": "sweep"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perfmodel", description="Calibrated performance models and "
                                     "solvers for ML inference planning.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        if missing not in EXTRAS:
            raise
        print(f"perfmodel: error: this command needs {missing!r}; install it with "
              f"pip install 'perfmodel[{EXTRAS[missing]}]'", file=sys.stderr)
        return 2
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"perfmodel: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
