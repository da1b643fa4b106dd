"""Import a report script (validate/reports/<name>/<script>.py: plain scripts, not packages) for a test."""
import importlib.util
import sys
from pathlib import Path

REPORTS = Path(__file__).resolve().parents[1] / "validate" / "reports"


def load_report_script(report: str, script: str):
    """validate/reports/<report>/<script>.py as a module, registered in sys.modules (dataclasses look
    their module up while the class is built)."""
    spec = importlib.util.spec_from_file_location(f"{report}_{script}", REPORTS / report / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
