"""The suite's own rules: when may a test skip?"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT


def run_real_tests(tmp_path: object, **env: str) -> subprocess.CompletedProcess[str]:
    """tests/test_real.py (every test needs ../shared) with ../shared pointed elsewhere."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_real.py"],
        cwd=ROOT,
        env={**os.environ, "DSTACK_MR_SHARED": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("required", ["", "0"])
def test_missing_shared_skips_by_default(tmp_path: object, required: str) -> None:
    result = run_real_tests(tmp_path, DSTACK_MR_SHARED_REQUIRED=required)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" in result.stdout and "passed" not in result.stdout


def test_missing_shared_fails_when_required(tmp_path: object) -> None:
    result = run_real_tests(tmp_path, DSTACK_MR_SHARED_REQUIRED="1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "DSTACK_MR_SHARED_REQUIRED is set" in result.stdout
    assert "skipped" not in result.stdout
