"""`mlip eval` (being implemented)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` verb (not available yet)."""
