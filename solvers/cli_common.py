"""The `perfmodel solve ...` command group, shared by every solver's command module."""
from __future__ import annotations


def solve_subparsers(subparsers):
    """The sub-subparsers of `perfmodel solve`, creating the "solve" parser on first use and caching
    it on `subparsers`, so each solver module can add its own `solve <name>` command."""
    cached = getattr(subparsers, "_perfmodel_solve_subparsers", None)
    if cached is None:
        solve = subparsers.add_parser("solve", help="solvers: bit allocation, offloading, KV budgets, test-time compute")
        cached = solve.add_subparsers(dest="solver", required=True)
        subparsers._perfmodel_solve_subparsers = cached
    return cached
