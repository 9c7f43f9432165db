"""matplotlib without a display, set up in one place: the report figures (eval/report.py), the heat map
(eval/matrix.py) and the experiment scripts' plots all draw through `pyplot()`."""

from __future__ import annotations


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (PNG files, no display needed; imported on first use,
    so modules that only sometimes plot do not pay for matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
