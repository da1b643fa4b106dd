"""Placeholder page (being written)."""
import streamlit as st


def render() -> None:
    st.title("compare")
    st.info("not available yet")
