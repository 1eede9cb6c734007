"""The published programs' loops (twinbench/frameworks/reference_programs.py) are timed as the docs say: each side's
own evaluation inside its clock (docs/methodology.md#reference-programs)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import models
from twinbench import imports
from twinbench.frameworks import reference_programs as reference


def tiny_split(n: int, seed: int) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    return SimpleNamespace(images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                           labels=rng.integers(0, 10, n).astype(np.int64))


def test_published_torch_program_clock_includes_its_evaluation(monkeypatch):
    if not imports.installed("torch") or imports.torch_blocked_reason():
        pytest.skip(imports.torch_blocked_reason() or "torch is not installed")
    torch = imports.torch()
    events: list[str] = []   # "train" / "eval" forward calls and "clock" reads, in order

    real_spec = models.get("lenet")

    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = real_spec.torch_model()

        def forward(self, x):
            events.append("train" if torch.is_grad_enabled() else "eval")
            return self.net(x)

    monkeypatch.setattr(models, "get",
                        lambda name: SimpleNamespace(torch_model=Recording) if name == "lenet"
                        else real_spec)
    ticks = iter(range(1000))

    def clock():
        events.append("clock")
        return float(next(ticks))

    monkeypatch.setattr(reference, "time", SimpleNamespace(perf_counter=clock))
    seconds, accuracy = reference.torch_tutorial_epochs(tiny_split(8, 0), tiny_split(8, 1))

    clocks = [i for i, e in enumerate(events) if e == "clock"]
    evals = [i for i, e in enumerate(events) if e == "eval"]
    assert len(clocks) == 2 and evals, events
    assert clocks[0] < events.index("train"), "the clock must start before training"
    assert max(evals) < clocks[1], "the clock stopped before the evaluation ended"
    assert seconds == 1.0 and 0.0 <= accuracy <= 1.0
