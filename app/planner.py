"""The perfmodel deployment planner (Streamlit). Run with `perfmodel app` or
`streamlit run app/planner.py`.

Each page is a `render()` function in app/ui/; this file only sets up the window and the navigation.
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

import streamlit as st

# `streamlit run app/planner.py` puts app/ (not the repository) on sys.path; a source checkout
# without `pip install -e .` still imports the project this way.
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

from app.ui import bits, compare, kv, offload, plan, serve, tts, validation, visual  # noqa: E402

st.set_page_config(page_title="perfmodel planner", page_icon=":bar_chart:", layout="wide")

def _plan_alias() -> None:
    plan.render()


#: The default page is served at "/" (Streamlit ignores a default page's url_path), so /plan, the
#: address the Plan page's own link names, gets a hidden page of its own (issue 16: it was "Page not
#: found"). Streamlit releases without hidden pages skip the alias.
ALIASES = [st.Page(_plan_alias, title="Plan", url_path="plan", visibility="hidden")] \
    if "visibility" in inspect.signature(st.Page).parameters else []

PAGES = {
    "Planner": [
        st.Page(plan.render, title="Plan", default=True),
        *ALIASES,
        st.Page(compare.render, title="Compare", url_path="compare"),
        st.Page(serve.render, title="Serve", url_path="serve"),
        st.Page(validation.render, title="Validation", url_path="validation"),
        st.Page(visual.render, title="Visual generation", url_path="visual"),
    ],
    "Solvers": [
        st.Page(bits.render, title="Bit allocation", url_path="bits"),
        st.Page(offload.render, title="Offloading", url_path="offload"),
        st.Page(kv.render, title="KV budgets", url_path="kv"),
        st.Page(tts.render, title="Test-time scaling", url_path="tts"),
    ],
}

st.navigation(PAGES).run()
