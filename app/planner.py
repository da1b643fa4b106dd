"""The perfmodel deployment planner (Streamlit). Run with `perfmodel app` or
`streamlit run app/planner.py`.

Each page is a `render()` function in app/ui/; this file only sets up the window and the navigation.
"""
from __future__ import annotations

import streamlit as st

from app.ui import bits, compare, kv, offload, plan, tts, validation

st.set_page_config(page_title="perfmodel planner", page_icon=":bar_chart:", layout="wide")

PAGES = {
    "Planner": [
        st.Page(plan.render, title="Plan", url_path="plan", default=True),
        st.Page(compare.render, title="Compare", url_path="compare"),
        st.Page(validation.render, title="Validation", url_path="validation"),
    ],
    "Solvers": [
        st.Page(bits.render, title="Bit allocation", url_path="bits"),
        st.Page(offload.render, title="Offloading", url_path="offload"),
        st.Page(kv.render, title="KV budgets", url_path="kv"),
        st.Page(tts.render, title="Test-time scaling", url_path="tts"),
    ],
}

st.navigation(PAGES).run()
