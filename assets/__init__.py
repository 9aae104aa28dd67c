"""Data only: run presets (presets/*.toml), the Qt style sheet, icons and report templates."""
