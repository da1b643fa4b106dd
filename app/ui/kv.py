"""Placeholder page (being written)."""
import streamlit as st


def render() -> None:
    st.title("kv")
    st.info("not available yet")
