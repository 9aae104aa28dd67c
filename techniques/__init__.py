"""Efficiency techniques as plugins: one module per technique plus the registry.

Metadata (techniques.registry) imports without torch; implementations import torch lazily.
"""
