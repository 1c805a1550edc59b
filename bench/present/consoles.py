"""Where tokbench prints: tables and documents on stdout, progress and messages on stderr."""

from __future__ import annotations

from rich.console import Console

err = Console(stderr=True)


def console() -> Console:
    """stdout, at least 120 columns wide even when piped, so tables stay readable in logs."""
    out = Console()
    return out if out.is_terminal else Console(width=max(out.width, 120))
