"""Workloads the worker runs (train; infer, compress and distill build on it). They import torch."""
