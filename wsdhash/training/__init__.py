"""Training: distribution strategy, optimisation, checkpoints and the training loop."""
