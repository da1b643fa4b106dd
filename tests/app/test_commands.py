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
    assert err == f"perfmodel: error: --port: {port} must be a whole number from 1 to 65535"


def test_app_is_registered_with_its_options():
    args = cli.build_parser().parse_args(["app", "--port", "9000", "--headless"])
    assert (args.port, args.headless, args.address, args.handler) == (9000, True, "localhost", commands.run_app)
