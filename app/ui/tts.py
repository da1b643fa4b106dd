"""Placeholder page (being written)."""
import streamlit as st


def render() -> None:
    st.title("tts")
    st.info("not available yet")
