"""Built-in models: a plain-PyTorch GPT and its size presets (presets.py imports without torch)."""
