"""Serving: Triton model configurations and the model repository."""
