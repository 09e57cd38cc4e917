"""The pieces of ``benchmarks/bench_density_table.py`` (not an installed package: the script puts its folder on
``sys.path``). ``base``: settings, the dataset context and the scoring helpers; ``specs_*``: one module per family
group, a ``run_<model>(ctx) -> row`` function per table row; ``specs``: the registry and run order; ``report``:
the JSON cache, the verdicts and the markdown table.
"""
