"""The lowering phase: a validated IR -> a PyTorch module and its static plan."""
