"""The registry of everything a spec may name: kernels, priors, nets, schedules, data
sets, rewards and energies, actions, policies and objectives. Each entry's arguments are a pydantic model with extra="forbid".
This package is torch-free: it describes and checks; gfdsl's lowering builds the modules.
"""

from gfdsl.library.registry import REGISTRY, Entry, Ref  # noqa: F401
from gfdsl.library import (  # noqa: F401
    actions, conditions, datasets, kernels, nets, objectives, samplers, schedules, targets,
)
