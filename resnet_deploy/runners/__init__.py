"""Inference runners, one per backend, behind `BaseRunner`."""
