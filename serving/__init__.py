"""Serving under load: request workloads, an iteration-level continuous-batching simulator driven by
perfmodel's per-engine step times, disaggregated prefill/decode, and an SLO planner.

Imports hardware, workloads and perfmodel; nothing in perfmodel imports it.
"""
