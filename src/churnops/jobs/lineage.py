"""Lineage tags attached to every run and model version."""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def code_version() -> str:
    """churnops package version, plus the git commit when run from a checkout."""
    try:
        package = version("churnops")
    except PackageNotFoundError:
        package = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return f"{package}+{commit}" if commit else package


def lineage_tags(meta: dict[str, Any]) -> dict[str, str]:
    """Data content hash, spec, feature-set version and code version of one snapshot."""
    return {
        "dataset.content_hash": meta["content_hash"],
        "dataset.spec": meta["spec"]["name"],
        "dataset.rows": str(meta["rows"]),
        "feature_set_version": meta["feature_set_version"],
        "code_version": code_version(),
    }
