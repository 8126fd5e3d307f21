"""Training settings of a spec's `train { ... }` block (validated; unknown keys refused).

Command-line flags of `gfdsl run` override these; the spec states the documented budget.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gfdsl.library.registry import Args, NonNegInt, PosFloat, PosInt


class TrainSettings(Args):
    steps: PosInt = Field(default=1000, le=100_000_000, description="gradient steps")
    batch: PosInt = Field(default=256, le=1_000_000, description="examples per step")
    lr: PosFloat = Field(default=1e-3, le=10.0, description="learning rate")
    seed: NonNegInt = Field(default=0, description="seed of parameters, data order and noise")
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: PosFloat | None = Field(default=None, description="clip the global gradient norm")
    warmup: NonNegInt = Field(default=0, description="linear learning-rate warm-up steps")
    lr_decay: Literal["none", "cosine"] = Field(default="none", description=(
        "cosine: the learning rate falls to 0 along the run, or along each round of ipf(rounds), "
        "each round being its own fit"))
    eval_k: PosInt = Field(default=100, le=100_000, description="backward trajectories per point in eval")
    checkpoint_every: PosInt = Field(default=1000, description="steps between checkpoints")


class RewardTrainSettings(TrainSettings):
    """Training of reward-driven models: exploration and replay make training off-policy,
    which the compiler sees here, statically (gfdsl.reward_model keeps P_F's own
    log-probabilities of explored actions and rescores replayed trajectories)."""

    lr_logz: PosFloat = Field(default=0.1, le=10.0, description="learning rate of log Z (tb)")
    epsilon: float = Field(default=0.0, ge=0, le=1, description="epsilon-uniform exploration")
    temperature: PosFloat = Field(default=1.0, le=1000.0, description="sample from softmax(logits / temperature)")
    replay: NonNegInt = Field(default=0, le=10_000_000, description="replay buffer capacity (terminal states); 0 = none")
    replay_fraction: float = Field(default=0.5, ge=0, le=1, description="share of each batch drawn from the buffer")
    eval_every: NonNegInt = Field(default=0, description="steps between exact evaluations logged to metrics.jsonl")
