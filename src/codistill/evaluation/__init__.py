"""Evaluation: confusion-matrix metrics, whole-image inference, and plots."""
