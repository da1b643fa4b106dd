"""Planning over the cost model: design-space sweeps (constraints, Pareto fronts, Parquet output, the
same sweep on Dask) and the recommendations built on them (cheapest device set, best batch).

The cost models live in `perfmodel`; this package only asks them questions in bulk, so it imports
perfmodel and never the other way round (tests/test_imports.py holds the layer order).

    >>> from planning import sweep
    >>> sweep.run(sweep.grid(model=["llama-3-8b"], hardware=["h200-sxm"], batch=[1, 8, 64]))  # doctest: +SKIP
"""
