"""Gantry: what users touch and what every part shares."""

__version__ = "0.1.0"
