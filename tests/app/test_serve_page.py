"""The Serve page under AppTest: the simulator's own numbers, the charts, the CLI line that
reproduces them, and bad input as a message."""
from __future__ import annotations

import pytest

pytest.importorskip("streamlit")

from app import serve_views  # noqa: E402
from tests.app.test_app import metrics, no_traceback, page  # noqa: E402

KEY = ("llama-3-8b", "h200-sxm-calibrated", "vllm", 1, 16, 10.0, 500, 1024, 256, 0.5, 0.04)


def test_serve_page_shows_the_simulated_load_curve():
    at = page("serve").run()
    no_traceback(at)
    frame = serve_views.load_curve(*KEY)
    row = frame[frame["rate_req_s"] == 10.0].iloc[0]
    shown = metrics(at)
    assert shown["TTFT p99"] == f"{row['ttft_p99_s'] * 1e3:.1f} ms"
    assert shown["Throughput"] == f"{row['throughput_tok_s']:,.0f} tok/s"
    assert len(at.get("vega_lite_chart")) == 3
    assert at.code[0].value == serve_views.cli_line(*KEY)
    # the line reproduces the page: the CLI parses it
    from app import cli

    args = cli.build_parser().parse_args(at.code[0].value.split()[1:])
    assert (args.rate, args.prompt, args.gen, args.slo_ttft) == (10.0, "1024", "256", 0.5)


def test_serve_page_bad_rate_is_a_message():
    at = page("serve").run()
    at.number_input(key="serve.rate").set_value(-3.0).run()
    no_traceback(at)
    assert any("rate" in e.value for e in at.error)


def test_latency_long_has_a_line_per_percentile():
    frame = serve_views.load_curve("qwen3-0.6b", "l4", "vllm", 1, 16, 4.0, 60, 256, 32, None, None)
    long = serve_views.latency_long(frame, "tpot")
    assert set(long["percentile"]) == {"p50", "p90", "p99"} and len(long) == 3 * len(frame)
    assert (frame["tpot_p50_s"] <= frame["tpot_p99_s"]).all()
