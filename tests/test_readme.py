"""README's Python examples run as written, and its commands are the ones CI runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "opt.pt").exists()
    assert issubclass(namespace["AdaBelief"], namespace["momenta"].Optimizer)


def _command_after(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\n```bash\n(.+?)\n```", README)
    assert match, marker
    return match.group(1)


def test_commands_pin_the_local_torch_wheel():
    for marker in ("main-command", "test-command"):
        assert "torch==2.13.0" in _command_after(marker)


def test_ci_runs_the_readme_test_command():
    printed = subprocess.run(
        ["bash", str(ROOT / ".ci" / "run"), "--print-command"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert printed == _command_after("test-command")


def test_the_torch_floor_is_the_one_ci_tests():
    """pyproject.toml's ``torch>=X`` is the version .ci/floor runs the suite on, and README says so."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    declared = re.findall(r'^\s*"torch>=([0-9.]+)"', pyproject, flags=re.M)
    assert len(declared) == 1, declared
    tested = subprocess.run(
        ["bash", str(ROOT / ".ci" / "floor"), "--print-version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert declared[0] == tested
    assert f"`torch>={tested}`" in README
    assert f"`torch=={tested}`" in README
