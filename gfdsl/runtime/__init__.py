"""The PyTorch half of gfdsl: modules that the lowering builds from registry entries.

Everything here imports torch; nothing in the front end (parse, check, IR, render)
imports this package.
"""

import torch.distributions

# Argument validation in torch.distributions costs a few microseconds per distribution
# built; gfdsl's kernels validate their inputs by construction (shapes are checked before
# lowering), so it is switched off for speed.
torch.distributions.Distribution.set_default_validate_args(False)
