"""The engine: the compiled module, its rollouts, objectives, training loop,
checkpoints and evaluation. Everything here imports torch."""
