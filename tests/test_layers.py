"""The layer rule of docs/design.md, checked with import-linter: nothing in dann imports upward."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[test]')")


def _lint(src: Path, config: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(src), "PATH": str(LINT.parent)}
    return subprocess.run([str(LINT), "--config", str(config), "--no-cache"], cwd=src.parent, env=env, capture_output=True, text=True)


def test_the_package_keeps_its_layers():
    result = _lint(ROOT / "src", ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The check can fail: the same contract on a copy of dann where the data layer imports the CLI."""
    shutil.copytree(ROOT / "src" / "dann", tmp_path / "src" / "dann", ignore=shutil.ignore_patterns("__pycache__"))
    blobs = tmp_path / "src" / "dann" / "data" / "blobs.py"
    blobs.write_text(blobs.read_text() + "\nimport dann.cli  # upward\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    result = _lint(tmp_path / "src", tmp_path / "pyproject.toml")
    assert result.returncode != 0
    assert "dann.data.blobs -> dann.cli" in result.stdout
