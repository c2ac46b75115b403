"""The `bystroq` command line (see bystroq.cli.app)."""

from __future__ import annotations

from bystroq.cli.app import main

__all__ = ["main"]
