"""The package type-checks clean under ``mypy --strict`` (the ``[tool.mypy]`` table of
pyproject.toml), so a wrong type is caught by the test suite and CI, not in production."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (the dev extra; dev.py installs it)")
def test_package_type_checks_strict() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
