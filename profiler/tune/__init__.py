"""Auto-tune (`effiscope tune`): the search space of a config on this machine (space), the search
with memory pruning and successive halving (search), trials as real runs (runner), what it says
(report), the command (cli)."""
