"""CLI command `perfmodel app`: start the Streamlit planner (registered by app.cli).

Streamlit is imported by the child process only, so the rest of the CLI starts without it.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ENTRY = Path(__file__).resolve().parent / "planner.py"


def register(subparsers) -> None:
    p = subparsers.add_parser("app", help="open the Streamlit deployment planner in the browser")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--address", default="localhost", help="address to listen on (default localhost)")
    p.add_argument("--headless", action="store_true", help="do not open a browser (servers, CI, SSH)")
    p.set_defaults(handler=run_app)


def streamlit_command(port: int, address: str = "localhost", headless: bool = False) -> list[str]:
    """The `streamlit run` command line for the planner; usage statistics stay off (no network)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"--port: {port!r} must be a whole number from 1 to 65535")
    return [sys.executable, "-m", "streamlit", "run", str(ENTRY), "--server.port", str(port),
            "--server.address", address, "--server.headless", "true" if headless else "false",
            "--browser.gatherUsageStats", "false"]


def run_app(args) -> int:
    cmd = streamlit_command(args.port, args.address, args.headless)
    if importlib.util.find_spec("streamlit") is None:
        raise ValueError("app: streamlit is not installed; install it with pip install 'perfmodel[app]'")
    print(f"perfmodel planner on http://{args.address}:{args.port}  (Ctrl+C stops it)", file=sys.stderr)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
