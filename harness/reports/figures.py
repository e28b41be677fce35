"""Matplotlib figures as PNG data URIs: how every plot of report.html is embedded (nothing fetched)."""

from __future__ import annotations

import base64
import io


def png(figure) -> str:
    """A matplotlib figure as a PNG data URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
