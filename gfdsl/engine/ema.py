"""An exponential moving average of the trained parameters (`ema = 0.999` in the train
block), the weights a run samples and evaluates with.

After every optimizer step theta_ema <- d theta_ema + (1 - d) theta (Polyak & Juditsky
1992; the EMA that DDPMs sample with, Ho et al. 2020, app. B), starting from the
initial parameters. The averages are checkpointed as `ema.<name>` tensors beside
`model.<name>`: a resumed run continues them, and `gfdsl sample` / `gfdsl eval` load
them in place of the raw weights.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class EMA:
    def __init__(self, model, decay: float):
        self.decay = decay
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - self.decay)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The averages for a checkpoint, {"ema.<name>": tensor}."""
        return {f"ema.{n}": t for n, t in zip(self.names, self.shadow)}

    @torch.no_grad()
    def restore(self, tensors: dict[str, torch.Tensor]) -> None:
        """A resumed run's averages (a checkpoint written without EMA: the weights)."""
        for n, s, p in zip(self.names, self.shadow, self.params):
            s.copy_(tensors.get(f"ema.{n}", p))

    @contextmanager
    def applied(self):
        """The averages in the model's parameters for the body (evaluation, samples)."""
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)


@torch.no_grad()
def load_averages(model, tensors: dict[str, torch.Tensor]) -> bool:
    """Copy a checkpoint's `ema.*` averages into the model's parameters (sample, eval);
    False where the run kept none."""
    found = False
    for n, p in model.named_parameters():
        t = tensors.get(f"ema.{n}")
        if t is not None:
            p.copy_(t)
            found = True
    return found
