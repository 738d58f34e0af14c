"""The publish stage: the Triton model repository, the registered students, promotion."""
