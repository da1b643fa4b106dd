"""CLI command `perfmodel app`: start the Streamlit planner (registered by app.cli).

Streamlit is imported by the child process only, so the rest of the CLI starts without it.
"""
from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

from hardware.inputs import flag

ENTRY = Path(__file__).resolve().parent / "planner.py"


def register(subparsers) -> None:
    p = subparsers.add_parser("app", help="open the Streamlit deployment planner in the browser")
    p.add_argument("--port", type=flag(1, 65535, whole=True), default=8501, help="port to serve on (default 8501)")
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
    return run_child(cmd)


#: Signals passed on to the Streamlit child: a service manager's stop (SIGTERM), a closed terminal
#: (SIGHUP). Ctrl+C reaches the whole foreground process group by itself.
FORWARDED = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def run_child(cmd: list[str], grace_s: float = 10.0) -> int:
    """Run `cmd` until it exits, forwarding SIGTERM / SIGHUP to it, so stopping `perfmodel app` stops
    the server too (issue 16: a SIGTERM left Streamlit running). Returns the child's exit code (0
    after Ctrl+C); the child never outlives this call."""
    child = subprocess.Popen(cmd)

    def forward(signum, frame):
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        while True:
            try:
                code = child.wait()
                return 0 if code in (-signal.SIGINT, 130) else code
            except KeyboardInterrupt:  # Ctrl+C: the child got it too; wait for it to stop
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(grace_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
