"""./setup.sh refuses an unusable machine with one sentence naming what is missing (no traceback)."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import REPO


def _setup(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(["bash", str(REPO / "setup.sh")], capture_output=True, text=True, env=env, timeout=60)


def test_missing_python_is_named(tmp_path):
    result = _setup({"PYTHON": str(tmp_path / "python9")})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"setup: no {tmp_path / 'python9'} found: install Python 3.10 or "
                                                   "newer (apt-get install python3 python3-venv)."]


@pytest.mark.parametrize("version", ["3.8.10", "3.9.18"])
def test_old_python_is_refused(tmp_path, version):
    fake = tmp_path / "python3"
    # answers -V like that interpreter, and fails the version check like it would
    fake.write_text(f'#!/bin/sh\nif [ "$1" = "-V" ]; then echo "Python {version}"; exit 0; fi\nexit 1\n')
    fake.chmod(0o755)
    result = _setup({"PYTHON": str(fake)})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"Python {version} is too old" in lines[0] and "3.10" in lines[0]
