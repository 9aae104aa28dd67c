"""`effiscope doctor`, the self-check: command.py runs the checks and writes the report, base.py
is what every check uses, the checks*.py modules are the checks (CPU and CUDA, by subject)."""
