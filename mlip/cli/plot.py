"""`mlip plot` (being implemented)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `plot` verb (not available yet)."""
