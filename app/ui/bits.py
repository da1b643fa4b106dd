"""Placeholder page (being written)."""
import streamlit as st


def render() -> None:
    st.title("bits")
    st.info("not available yet")
