"""Placeholder page (being written)."""
import streamlit as st


def render() -> None:
    st.title("validation")
    st.info("not available yet")
