"""Light and dark themes, and the settings kept between sessions.

A theme is a table of colours: it fills the @names of assets/style.qss and the Qt palette (so
check boxes and scroll bars drawn by the Fusion style follow too). Settings live in an INI file
in EffiScope's data directory (so $EFFISCOPE_HOME gives tests and second installs their own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
STYLE_PATH = ASSETS_DIR / "style.qss"

THEMES: dict[str, dict[str, str]] = {
    "light": {
        "window": "#f8fafc", "panel": "#ffffff", "border": "#e2e8f0", "border-strong": "#cbd5e1",
        "text": "#1e293b", "muted": "#64748b", "heading": "#475569", "subtle-bg": "#f1f5f9",
        "accent": "#2563eb", "accent-dark": "#1d4ed8", "accent-soft": "#dbeafe",
        "accent-faded": "#93c5fd", "disabled-text": "#94a3b8", "error-bg": "#fef2f2",
        "error-border": "#fecaca", "error-text": "#b91c1c", "warn-bg": "#fffbeb",
        "warn-border": "#fde68a", "ok-text": "#15803d", "alt-row": "#f8fafc",
        "tooltip-bg": "#0f172a", "tooltip-text": "#f8fafc", "selection-text": "#0f172a",
    },
    "dark": {
        "window": "#0b1120", "panel": "#111827", "border": "#1f2937", "border-strong": "#334155",
        "text": "#e2e8f0", "muted": "#94a3b8", "heading": "#cbd5e1", "subtle-bg": "#1e293b",
        "accent": "#3b82f6", "accent-dark": "#2563eb", "accent-soft": "#1e3a8a",
        "accent-faded": "#1e40af", "disabled-text": "#64748b", "error-bg": "#3f0d0d",
        "error-border": "#7f1d1d", "error-text": "#fca5a5", "warn-bg": "#3a2a05",
        "warn-border": "#854d0e", "ok-text": "#86efac", "alt-row": "#0f172a",
        "tooltip-bg": "#e2e8f0", "tooltip-text": "#0f172a", "selection-text": "#f8fafc",
    },
}


def style_sheet(theme: str) -> str:
    """assets/style.qss with the theme's colours and absolute icon paths ("" if unreadable)."""
    colors = THEMES.get(theme, THEMES["light"])
    try:
        text = STYLE_PATH.read_text(encoding="utf-8")
    except OSError:
        return ""
    for name in sorted(colors, key=len, reverse=True):  # @accent-dark before @accent
        text = text.replace(f"@{name}", colors[name])
    # Style sheet urls are relative to the working directory, not the sheet: make them absolute.
    text = text.replace("{icons}", (ASSETS_DIR / "icons").as_posix())
    return text.replace("{variant}", "-dark" if theme == "dark" else "")


def palette(theme: str) -> QPalette:
    colors = THEMES.get(theme, THEMES["light"])
    pal = QPalette()
    roles = {QPalette.ColorRole.Window: "window", QPalette.ColorRole.WindowText: "text",
             QPalette.ColorRole.Base: "panel", QPalette.ColorRole.AlternateBase: "alt-row",
             QPalette.ColorRole.Text: "text", QPalette.ColorRole.Button: "panel",
             QPalette.ColorRole.ButtonText: "text", QPalette.ColorRole.Highlight: "accent",
             QPalette.ColorRole.ToolTipBase: "tooltip-bg",
             QPalette.ColorRole.ToolTipText: "tooltip-text",
             QPalette.ColorRole.PlaceholderText: "muted", QPalette.ColorRole.Mid: "border-strong"}
    for role, name in roles.items():
        pal.setColor(role, QColor(colors[name]))
    pal.setColor(QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText,
                 QPalette.ColorRole.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor(colors["disabled-text"]))
    return pal


def apply_theme(app: QApplication, theme: str) -> None:
    """Fusion style (the same on every platform) with the theme's palette and style sheet.

    Restyling touches every widget (a second or more for a full window), so applying the theme
    already in force does nothing."""
    if app.property("effiscope_theme") == theme:
        return
    app.setStyle("Fusion")
    app.setPalette(palette(theme))
    app.setStyleSheet(style_sheet(theme))
    app.setProperty("effiscope_theme", theme)


class AppSettings:
    """What the app remembers: last config, window layout, theme, chart options."""

    def __init__(self, path: str | Path | None = None):
        if path is None:
            from profiler.store import data_home

            path = data_home() / "settings.ini"
        self.path = Path(path)
        self._qs = QSettings(str(self.path), QSettings.Format.IniFormat)

    def get(self, key: str, default: Any = None) -> Any:
        value = self._qs.value(key, default)
        return default if value is None else value

    def set(self, key: str, value: Any) -> None:
        self._qs.setValue(key, value)

    def get_bytes(self, key: str) -> QByteArray | None:
        value = self._qs.value(key)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def sync(self) -> None:
        self._qs.sync()

    @property
    def theme(self) -> str:
        theme = str(self.get("view/theme", "light"))
        return theme if theme in THEMES else "light"
