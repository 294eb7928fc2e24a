"""The README's first command: the whole demo on the local stack, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_walks_the_whole_lifecycle_and_exits_0():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.demo", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for step in (
        "1. The ISV creates",
        "2. The merchant opens",
        "3. Stored",
        "4. Rotation",
        "5. The merchant cancels",
        "Done:",
    ):
        assert step in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
