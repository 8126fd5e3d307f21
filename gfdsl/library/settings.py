"""Training settings of a spec's `train { ... }` block (validated; unknown keys refused).

Command-line flags of `gfdsl run` override these; the spec states the documented budget.
Some settings only mean something for some models (exploration of an action space, a
posterior's prior stage); NEEDS says which, and the checker refuses the others (E612).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gfdsl.library.registry import Args, NonNegInt, PosFloat, PosInt


class TrainSettings(Args):
    steps: PosInt = Field(default=1000, le=100_000_000, description="gradient steps (a posterior: of its rtb stage)")
    batch: PosInt = Field(default=256, le=1_000_000, description="examples (or trajectories) per step")
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
    ema: float = Field(default=0.0, ge=0, lt=1, description=(
        "decay of an exponential moving average of the weights, which sampling and evaluation "
        "use (e.g. 0.999); 0 = none"))
    checkpoint_every: PosInt = Field(default=1000, description="steps between checkpoints")
    # -- validation of data-trained models: a held-out split, early stopping, the best checkpoint --
    val: float = Field(default=0.0, ge=0, le=0.5, description=(
        "share of the training set held out for validation (never the test set); 0 = none"))
    val_every: NonNegInt = Field(default=0, description="steps between validation points (0: checkpoint_every)")
    val_n: PosInt = Field(default=1000, le=1_000_000, description="validation points scored (at most the split)")
    val_k: PosInt = Field(default=1, le=100_000, description=(
        "backward trajectories per validation point: 1 is the ELBO, more the IWAE bound (exact models: 1)"))
    patience: NonNegInt = Field(default=0, le=1_000_000, description=(
        "stop after this many validation points without a lower NLL; 0 = train all steps"))
    val_delta: float = Field(default=0.0, ge=0, le=1e6, description=(
        "a validation point is better only when its NLL is lower than the best by more than this (nats)"))
    # -- balance training against a reward (tb, db, subtb, vargrad, fm, rtb) --
    lr_logz: PosFloat = Field(default=0.1, le=10.0, description="learning rate of log Z (tb, rtb)")
    log_z_init: float | Literal["batch"] = Field(default=0.0, description=(
        'log Z before training (tb, rtb); "batch": the mean log-weight log R + log P_B - log P_F of one '
        "batch of P_F's trajectories (the ELBO estimate), so that log Z does not spend its first steps "
        "walking to the right scale (manywell: log Z = 164.7)"))
    replay: NonNegInt = Field(default=0, le=10_000_000, description="replay buffer capacity (terminal states); 0 = none")
    replay_fraction: float = Field(default=0.5, ge=0, le=1, description="share of each batch drawn from the buffer")
    replay_priority: Literal["uniform", "rank"] = Field(default="uniform", description=(
        "how buffered states are drawn: uniformly, or by the rank of their log R (probability "
        "proportional to 1 / (rank_weight * n + rank), Tripp et al. 2020)"))
    rank_weight: PosFloat = Field(default=0.01, le=1e6, description="k of rank-prioritised replay")
    local_search: NonNegInt = Field(default=0, le=100_000, description=(
        "MALA steps of each local-search round on buffered states (Sendera et al. 2024); 0 = none"))
    local_search_every: PosInt = Field(default=100, description="steps between local-search rounds")
    local_search_batch: PosInt | None = Field(default=None, le=1_000_000, description=(
        "buffered states moved per round (default: the batch)"))
    ld_step: PosFloat = Field(default=0.1, le=10.0, description=(
        "the first MALA step size; each round adapts it towards acceptance 0.574"))
    eval_every: NonNegInt = Field(default=0, description="steps between evaluations logged to metrics.jsonl")
    # -- behaviour policies: what draws the training trajectories (off-policy) --
    epsilon: float = Field(default=0.0, ge=0, le=1, description="epsilon-uniform exploration of an action space")
    temperature: PosFloat = Field(default=1.0, le=1000.0, description="sample actions from softmax(logits / temperature)")
    exploration: float = Field(default=0.0, ge=0, le=100.0, description=(
        "a chain's exploration: this standard deviation (per unit time for an SDE step) is added "
        "to each forward Gaussian's while drawing training trajectories"))
    exploration_steps: NonNegInt = Field(default=0, description=(
        "exploration decays linearly to 0 over this many steps; 0 = constant"))
    # -- conditional models (`condition y : int(0, 9)`) --
    cond_dropout: float = Field(default=0.0, ge=0, lt=1, description=(
        "share of training rows whose int conditions are replaced by a null value, which "
        "trains the unconditional model alongside (classifier-free guidance, Ho & Salimans 2022)"))
    eval_given: list[float] | None = Field(default=None, max_length=100, description=(
        "values of the real condition that evaluation reports (default: both ends and the middle "
        "of its distribution; an int condition: each of its values)"))
    # -- a posterior's first stage (the prior, trained from the data set) --
    prior_steps: NonNegInt = Field(default=0, le=100_000_000, description="steps of the prior stage (`... then rtb`)")
    prior_lr: PosFloat | None = Field(default=None, le=10.0, description="learning rate of the prior stage (default lr)")
    data_fraction: float = Field(default=0.0, ge=0, lt=1, description=(
        "a posterior: share of each rtb batch drawn backward by P_B from data points (off-policy)"))


# setting -> what the model needs for it to mean anything (checked by gfdsl.lang.check)
NEEDS = {"lr_logz": "reward", "log_z_init": "reward", "replay": "reward", "replay_fraction": "reward", "eval_every": "reward",
         "replay_priority": "reward", "rank_weight": "reward", "local_search": "reward chain",
         "local_search_every": "reward chain", "local_search_batch": "reward chain", "ld_step": "reward chain",
         "epsilon": "actions", "temperature": "actions", "exploration": "reward chain",
         "exploration_steps": "reward chain",
         "val": "data", "val_every": "data", "val_n": "data", "val_k": "data", "patience": "data", "val_delta": "data",
         "cond_dropout": "condition", "eval_given": "condition",
         "prior_steps": "posterior", "prior_lr": "posterior", "data_fraction": "posterior"}
