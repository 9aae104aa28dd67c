"""Everything that runs or measures: worker, workloads, models, samplers, protocol, store, CLI.

Never imports Qt. Modules that need torch import it themselves; `import profiler` stays light.
"""

__version__ = "0.1.0"
