"""Placeholder page (being written)."""
import streamlit as st


def render() -> None:
    st.title("offload")
    st.info("not available yet")
