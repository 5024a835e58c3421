"""Hyperparameter search: a sweep's plan (grid or random), one trial, and the Dask cluster that
runs the trials (a local one by default, a real one with ``--scheduler``)."""
