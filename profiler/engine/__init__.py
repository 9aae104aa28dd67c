"""The worker and what it runs (imports torch): the worker process, torchrun's side, data, models
with their weights, and the workloads with their one training loop."""
