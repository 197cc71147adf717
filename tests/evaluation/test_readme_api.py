"""The Python example of docs/training.md (load a checkpoint, predict, roll out) runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_readme_python_api_example(fno_run: Path) -> None:
    readme = (ROOT / "docs" / "training.md").read_text()
    section = readme[readme.index("Using a trained model from Python") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert '"outputs/<date>/<time>"' in code
    scope: dict = {}
    exec(code.replace('"outputs/<date>/<time>"', repr(str(fno_run))), scope)
    history, nxt, trajectory = scope["history"], scope["nxt"], scope["trajectory"]
    assert history.shape == (8, 4, 1, 32) and nxt.shape == (8, 1, 1, 32)
    assert trajectory.shape == (8, 50, 1, 32) and torch.isfinite(trajectory).all()
    torch.testing.assert_close(trajectory[:, :1], nxt)  # the rollout's first step is the one-step prediction
