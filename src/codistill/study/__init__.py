"""Paired-seed studies: per-image scores, their statistics, and the pre-registration gate."""
