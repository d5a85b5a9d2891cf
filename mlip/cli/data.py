"""`mlip data` (being implemented)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` verb (not available yet)."""
