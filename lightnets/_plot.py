"""The one home of plotting set-up: matplotlib is optional, and every plot lightnets draws is a file."""

from __future__ import annotations


def headless_pyplot():  # noqa: ANN201 - matplotlib's pyplot module, or None
    """``matplotlib.pyplot`` on the Agg backend (files only, no display needed), or None where matplotlib is
    not installed: plots are extras, and a run without them must not fail."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
