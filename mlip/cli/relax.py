"""`mlip relax` (being implemented)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `relax` verb (not available yet)."""
