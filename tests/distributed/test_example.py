"""The README's distributed example runs under torchrun, as documented, and learns.

``docs/distributed.md`` is the README's "Distributed training" section: its command is the
one run here, and its code excerpts are lines of ``examples/ddp_train.py`` (so they run).
Its excerpts are fenced as ``py``, not ``python``: tests/test_readme.py executes the README's
``python`` blocks in one process, and these need torchrun.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import momenta

from . import launch

pytestmark = launch.POSIX_ONLY

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = ROOT / "examples" / "ddp_train.py"
DOC = ROOT / "docs" / "distributed.md"
COMMAND = "torchrun --nproc_per_node 2 --standalone examples/ddp_train.py"
TIMEOUT = 90.0


def _sections() -> list[str]:
    """The distributed section: docs/distributed.md, and README's copy once it has one."""
    texts = [DOC.read_text()] if DOC.exists() else []
    readme = (ROOT / "README.md").read_text()
    if "## Distributed training" in readme:
        texts.append(readme.split("## Distributed training", 1)[1].split("\n## ", 1)[0])
    assert texts, "no distributed section in docs/distributed.md or README.md"
    return texts


@pytest.mark.parametrize("doc", _sections())
def test_documented_command_and_excerpts_are_the_example(doc):
    assert f"```bash\n{COMMAND}\n```" in doc
    assert "```python" not in doc, "python blocks would be executed by tests/test_readme.py"
    script = {line.strip() for line in EXAMPLE.read_text().splitlines()}
    excerpts = re.findall(r"```py\n(.*?)```", doc, flags=re.S)
    assert excerpts
    for excerpt in excerpts:
        for line in excerpt.splitlines():
            if line.strip() and line.strip() != "...":
                assert line.strip() in script, f"not a line of {EXAMPLE.name}: {line!r}"


def test_torchrun_example_trains(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    # `torchrun` is `python -m torch.distributed.run`; the module form needs no PATH
    argv = [sys.executable, "-m", "torch.distributed.run", *COMMAND.split()[1:]]
    argv += ["--epochs", "3", "--checkpoint", str(checkpoint)]
    log = tmp_path / "torchrun.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < TIMEOUT:
        time.sleep(0.05)
    timed_out = proc.poll() is None
    launch._kill(proc)  # torchrun and its workers, in every case
    output = log.read_text(errors="replace")
    assert not timed_out, f"torchrun did not finish in {TIMEOUT:.0f} s:\n{output}"
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{output}"
    losses = [float(v) for v in re.findall(r"epoch \d+: loss ([0-9.]+)", output)]
    assert len(losses) == 3, output
    assert losses[-1] < 0.5 * losses[0], output
    # the checkpoint of momenta.AdamW loads into torch.optim.AdamW (and back)
    saved = torch.load(checkpoint, weights_only=True)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))
    model.load_state_dict(saved["model"])
    torch.optim.AdamW(model.parameters()).load_state_dict(saved["optimizer"])
    momenta.AdamW(model.parameters()).load_state_dict(saved["optimizer"])
