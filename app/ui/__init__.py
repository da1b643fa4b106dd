"""Streamlit pages of the planner; each module's `render()` draws one page (see app/planner.py)."""
