"""Which device the Merlin stack runs on: the GPU path when cudf is usable, the CPU otherwise."""

from __future__ import annotations


def gpu_available() -> bool:
    """True when cudf (and so NVTabular's and Merlin's GPU path) can be used."""
    try:
        from merlin.core.compat import HAS_GPU
    except ImportError:  # no Merlin at all (the fast test tier): certainly no GPU path
        return False
    if not HAS_GPU:
        return False
    try:
        import cudf  # noqa: F401
    except ImportError:
        return False
    return True
