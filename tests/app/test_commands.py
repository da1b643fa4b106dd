"""`perfmodel app`: the command line it runs, and bad options as exit code 2."""
from __future__ import annotations

import sys

import pytest

from app import cli, commands


def test_app_command_runs_streamlit_on_the_planner():
    cmd = commands.streamlit_command(8600, "127.0.0.1", headless=True)
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert cmd[4].endswith("app/planner.py")
    flags = dict(zip(cmd[5::2], cmd[6::2]))
    assert flags == {"--server.port": "8600", "--server.address": "127.0.0.1", "--server.headless": "true",
                     "--browser.gatherUsageStats": "false"}
    assert dict(zip(*[iter(commands.streamlit_command(8501)[5:])] * 2))["--server.headless"] == "false"


@pytest.mark.parametrize("port", [0, 70000, -1])
def test_bad_port_exits_2_with_one_line(port, capsys):
    assert cli.main(["app", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"perfmodel app: error: argument --port: '{port}' must be a whole number from 1 to 65,535"


def test_app_is_registered_with_its_options():
    args = cli.build_parser().parse_args(["app", "--port", "9000", "--headless"])
    assert (args.port, args.headless, args.address, args.handler) == (9000, True, "localhost", commands.run_app)


def test_issue16_sigterm_to_perfmodel_app_stops_the_streamlit_child(tmp_path):
    """Issue 16: `perfmodel app` left the Streamlit child running when the parent got SIGTERM."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    script = ("import sys\nfrom app import cli, commands\n"
              f"commands.streamlit_command = lambda *a, **k: [sys.executable, '-c', {child!r}]\n"
              "sys.exit(cli.main(['app', '--headless', '--port', '8999']))\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    parent.send_signal(signal.SIGTERM)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        try:  # reap it if it became our zombie (it is the parent's child, so normally not)
            os.waitpid(child_pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    else:
        os.kill(child_pid, signal.SIGKILL)
        raise AssertionError("the Streamlit child outlived perfmodel app after SIGTERM")
