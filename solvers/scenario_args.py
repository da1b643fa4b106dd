"""Solvers that price time accept a `workloads.scenario.Scenario` beside their own arguments.

The convention (one for every solver): `scenario: Scenario | None = None` and
`engine: Engine | str = DEFAULT_ENGINE` are keyword arguments; a scenario supplies the fields the
solver would otherwise take one by one (precisions, tp, batch, prompt), and the solver's own
question (a context to size, a budget, a target) stays its own argument. Passing a field both ways
is an error, so a call never silently prefers one of two values.
"""
from __future__ import annotations

from workloads.scenario import Scenario


def from_scenario(scenario: Scenario | None, given: dict, mapping: dict) -> dict:
    """`given` (argument name -> value, None = not passed) completed from `scenario`: mapping is
    argument name -> Scenario field. Returns the arguments to use; defaults stay with the caller."""
    if scenario is None:
        return dict(given)
    if not isinstance(scenario, Scenario):
        raise ValueError(f"scenario: {type(scenario).__name__} must be a workloads.scenario.Scenario")
    if scenario.size != 1:
        raise ValueError(f"scenario: the solver takes one scenario, got {scenario.size}")
    out = dict(given)
    for arg, field in mapping.items():
        if given.get(arg) is not None:
            raise ValueError(f"{arg}: given both directly ({given[arg]!r}) and by the scenario's {field}; pass one")
        value = getattr(scenario, field)
        out[arg] = value.item() if hasattr(value, "item") else value
    return out
