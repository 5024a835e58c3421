"""Hyperparameter search: what can be swept (space), a sweep's plan (grid or random), one trial,
the Dask cluster that runs the trials (a local one by default, a real one with ``--scheduler``),
and the client's side: the sweep from start to end (sweep), the running trials (running) and the
sweep folder's files (results)."""
