"""`gantry up`, `gantry down`, `gantry status`: the local cluster."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Filled in by the launcher."""
