"""Models: the built-in plain-PyTorch GPT and its presets (presets.py imports without torch), and
Hugging Face models behind the same interface (hf.py; hf_cache / hf_arch / hf_shape are torch-free)."""
