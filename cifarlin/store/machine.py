"""The machine's arithmetic: which NumPy and which BLAS (library, version, kernels) computed a run.

The same seed gives the same numbers bit for bit only on the same arithmetic: OpenBLAS chooses
its kernels by CPU (Haswell, SkylakeX, Zen, ...), and kernels of another vector width sum in
another order. A run that is chaotic (setting 1: eta 0.1) amplifies those last bits into other
accuracies, so every model, checkpoint and history file records the arithmetic it was made with.
"""

from __future__ import annotations

import platform
from functools import cache
from typing import Any

KEYS = ("numpy", "blas", "blas_version", "blas_kernel", "python")


@cache
def arithmetic() -> dict[str, str]:
    """This process's NumPy version, its BLAS (library, version, kernel, as threadpoolctl reports
    them) and the Python version; '' where unknown."""
    import numpy as np

    info: dict[str, str] = dict.fromkeys(KEYS, "")
    info["numpy"], info["python"] = np.__version__, platform.python_version()
    try:
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception:  # threadpoolctl cannot see the libraries: unknown, not an error
        blas = []
    if blas:
        b = blas[0]
        info["blas"] = str(b.get("internal_api") or "")
        info["blas_version"] = str(b.get("version") or "")
        info["blas_kernel"] = str(b.get("architecture") or "")
    return info


def from_file(value: Any) -> dict[str, str]:
    """The recorded arithmetic of a file's attribute (a JSON object), keeping only short texts of
    the known keys: a file from anywhere cannot put anything else here."""
    import json

    try:
        d = json.loads(value) if isinstance(value, str) else {}
    except ValueError:
        return {}
    if not isinstance(d, dict):
        return {}
    return {k: d[k] for k in KEYS if isinstance(d.get(k), str) and len(d[k]) <= 64}


def describe(a: dict[str, str]) -> str:
    """``NumPy 2.4.6, OpenBLAS 0.3.31 (Haswell kernels)``, or says that nothing was recorded."""
    if not a.get("numpy"):
        return "not recorded"
    names = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}
    text = f"NumPy {a['numpy']}"
    if a.get("blas"):
        text += f", {names.get(a['blas'], a['blas'])} {a.get('blas_version', '')}".rstrip()
        if a.get("blas_kernel"):
            text += f" ({a['blas_kernel']} kernels)"
    return text
