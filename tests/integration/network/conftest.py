"""Fixtures for network tests: the runtime tests' busybox root, core and runc."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))

from rtkit import busybox_root, core, runc  # noqa: E402, F401 - shared fixtures
