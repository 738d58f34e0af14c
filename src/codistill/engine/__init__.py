"""Training: the co-training loop, checkpoints, distributed setup and tracking."""
