"""Measuring in the worker's process: the system sampler (psutil, NVML), contention, what torch
can do here, memory probes, profile capture, the roofline, model sizes."""
