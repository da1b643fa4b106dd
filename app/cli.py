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

from hardware.inputs import InputError
from hardware.spec import SpecError
from hardware.units import UnitError
from workloads.model import ModelError
from workloads.scenario import ScenarioError

#: Modules that add subcommands; each defines register(subparsers). Listed here, not discovered,
#: so the command set is explicit. A module whose optional dependencies are missing still
#: registers: it imports them only when its command runs.
COMMAND_MODULES = (
    "perfmodel.commands",
    "planning.commands",
    "validate.commands",
    "app.commands",
    "solvers.kv_commands",
    "solvers.offload_commands",
    "solvers.bits_commands",
    "serving.commands",
    "serving.plan_commands",
)

USER_ERRORS = (SpecError, UnitError, ModelError, ScenarioError, InputError, ValueError, FileNotFoundError, KeyError)

#: Optional dependencies and the extra that installs each (pyproject.toml).
EXTRAS = {"torch": "validate", "transformers": "validate", "cvxpy": "solvers", "highspy": "solvers",
          "streamlit": "app", "dask": "sweep", "distributed": "sweep", "pyarrow": "sweep"}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `perfmodel predict: error: argument --batch: ...` and exit 2
    (the usage is one `-h` away; subcommand parsers inherit this class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="perfmodel", description="Calibrated performance models and "
                    "solvers for ML inference planning.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # a flag refused with one line: exit 2 (--help exits 0 as argparse does)
        if done.code in (0, None):
            raise
        return done.code if isinstance(done.code, int) else 2
    try:
        return int(args.handler(args) or 0)
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        if missing not in EXTRAS:
            raise
        print(f"perfmodel: error: this command needs {missing!r}; install it with "
              f"pip install 'perfmodel[{EXTRAS[missing]}]'", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"perfmodel: error: {str(message).splitlines()[0] if str(message) else type(err).__name__}",
              file=sys.stderr)
        return 2
    except OSError as err:  # a file the command reads or writes: name it, with the system's reason
        where = f"{err.filename!r}: " if err.filename else ""
        print(f"perfmodel: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
