"""The main window's menus and desktop habits: shortcuts, export, config files, settings, themes.

A mixin of MainWindow (app/main.py), kept apart so the window's run logic reads on its own.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from app import dialogs
from app.theme import apply_theme
from profiler.config import ConfigError, RunConfig

EXPORT_FILTERS = {"html": "HTML report (*.html)", "md": "Markdown report (*.md)",
                  "json": "JSON report (*.json)", "csv": "CSV samples (*.csv)",
                  "trace": "Profiler trace (*.trace.json.gz)"}


def report_export():
    """profiler.report.export when this version has it, else None (the action stays disabled)."""
    try:
        from profiler.report import export
    except ImportError:
        return None
    return export


class WindowActions:
    """Menus, shortcuts and settings of the main window (mixed into MainWindow)."""

    def build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.action_open = self._action("&Open config…", "Ctrl+O", self.open_config,
                                        "Load a run config (TOML) into the settings")
        self.action_save = self._action("&Save config as…", "Ctrl+S", self.save_config,
                                        "Write the current settings as a run config (TOML)")
        self.action_export = self._action("&Export report…", "Ctrl+E", self.export_report,
                                          "A report of the selected run, or a comparison of the "
                                          "ticked runs against the baseline")
        if report_export() is None:
            self.action_export.setEnabled(False)
            self.action_export.setToolTip("Reports are not available in this version")
        quit_action = self._action("&Quit", "Ctrl+Q", self.request_quit,
                                   "Close EffiScope (asks first while a run goes)")
        from app.tracker_export import build_menu  # File > Export to > TensorBoard, MLflow, CSV

        for action in (self.action_open, self.action_save, None, self.action_export,
                       build_menu(self).menuAction(), None, quit_action):
            file_menu.addSeparator() if action is None else file_menu.addAction(action)

        run_menu = bar.addMenu("&Run")
        self.action_run = self._action("&Run", "Ctrl+R", self.start_run,
                                       "Start a run with these settings")
        self.action_stop = self._action("&Stop", "Esc", self.stop_run,
                                        "Stop after the current step; the run is kept")
        self.action_stop.setShortcuts([QKeySequence("Esc"), QKeySequence("Ctrl+.")])
        self.action_stop.setEnabled(False)
        self.action_profile = self._action(
            "Capture &profile", "Ctrl+P",
            lambda: self.profile.capture_button.isEnabled() and self.profile.capture_button.click(),
            "Record the next steps of the running train run with torch.profiler")
        self.action_tune = self._action(
            "Find the &fastest…", "", self.open_tune,
            "Search the fastest combination of techniques that fits in memory for these "
            "settings (each trial is a short run)")
        for action in (self.action_run, self.action_stop, self.action_profile, self.action_tune):
            run_menu.addAction(action)
        self.run_button.setToolTip("Start a run with these settings (Ctrl+R)")
        self.stop_button.setToolTip("Stop after the current step; the run is kept (Esc)")

        view_menu = bar.addMenu("&View")
        theme_group = QActionGroup(self)
        self.theme_actions = {}
        for name, label in (("light", "&Light theme"), ("dark", "&Dark theme")):
            action = QAction(label, self, checkable=True)
            action.triggered.connect(lambda _checked=False, n=name: self.set_theme(n))
            theme_group.addAction(action)
            view_menu.addAction(action)
            self.theme_actions[name] = action
        self.theme_actions[self.settings.theme].setChecked(True)
        view_menu.addSeparator()
        axis_group = QActionGroup(self)
        self.axis_actions = {}
        for mode, label in (("step", "X axis: &step"), ("time", "X axis: &time"),
                            ("tokens", "X axis: to&kens seen"), ("wall", "X axis: time of &day")):
            action = QAction(label, self, checkable=True)
            action.triggered.connect(lambda _checked=False, m=mode: self.charts.set_x_axis(m))
            axis_group.addAction(action)
            view_menu.addAction(action)
            self.axis_actions[mode] = action
        self.axis_actions["step"].setChecked(True)
        self.charts.axis_changed.connect(lambda mode: self.axis_actions[mode].setChecked(True))
        view_menu.addSeparator()
        # Side panels fold away, so a half-screen window or a 150 % scale keeps room for charts.
        self.panel_actions = {}
        for key, label, shortcut, panel in (
                ("settings", "Settings &panel", "Ctrl+Shift+L", self.left_panel),
                ("history", "&History panel", "Ctrl+Shift+H", self.history)):
            action = QAction(label, self, checkable=True)
            action.setChecked(True)
            action.setShortcut(QKeySequence(shortcut))
            action.setToolTip(f"Show or hide the {key} column ({shortcut})")
            action.toggled.connect(panel.setVisible)
            self.addAction(action)
            view_menu.addAction(action)
            self.panel_actions[key] = action
        for index, name in enumerate(("&Charts", "S&ummary", "C&ompare", "&Profile",
                                      "S&ystem"), start=1):
            view_menu.addAction(self._action(name, f"Ctrl+{index}",
                                             lambda _c=False, i=index - 1: self.tabs.setCurrentIndex(i),
                                             ""))

        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self._action("&Quick start", "F1", self.show_quick_start,
                                         "Five steps from the first run to a comparison"))
        help_menu.addAction(self._action("&Keyboard shortcuts", "", self.show_shortcuts,
                                         "Every shortcut of the window"))
        help_menu.addSeparator()
        help_menu.addAction(self._action("&About EffiScope", "", self.show_about,
                                         "Versions, device and data folder"))

    def _action(self, text: str, shortcut: str, slot, tip: str) -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.triggered.connect(lambda _checked=False: slot())
        self.addAction(action)  # shortcuts work even when the menu bar is hidden
        return action

    def open_tune(self):
        """Run ▸ Find the fastest: a tune of the current settings in its own window."""
        from app.tune_dialog import TuneDialog

        dialog = getattr(self, "tune_dialog", None)
        if dialog is not None and dialog.running():
            dialog.raise_()
            return dialog
        self.tune_dialog = TuneDialog(self.build_config(), self.host_caps, self.store, self,
                                      evaluator=getattr(self, "tune_evaluator", None),
                                      on_use=self.open_config)
        self.tune_dialog.runs_changed.connect(lambda: self.history.refresh())
        self.tune_dialog.show()
        return self.tune_dialog

    # --- config files ----------------------------------------------------------------------------
    def open_config(self, path: str | None = None) -> bool:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Open run config", str(Path.home()),
                                                  "Run config (*.toml)")
            if not path:
                return False
        try:
            config = RunConfig.load(path)
        except ConfigError as exc:
            self.show_error(f"Cannot open {path}: {exc}", "Fix the file or choose another one.")
            return False
        self.set_config(config)
        self.statusBar().showMessage(f"loaded {path}", 8000)
        return True

    def save_config(self, path: str | None = None) -> bool:
        if path is None:
            name = (self.build_config().name or "run") + ".toml"
            path, _ = QFileDialog.getSaveFileName(self, "Save run config",
                                                  str(Path.home() / name), "Run config (*.toml)")
            if not path:
                return False
        try:
            self.build_config().save(path)
        except OSError as exc:
            self.show_error(f"Cannot write {path} ({exc.strerror}).", "Choose another place.")
            return False
        self.statusBar().showMessage(f"saved {path}", 8000)
        return True

    # --- export -----------------------------------------------------------------------------------
    def export_targets(self) -> tuple[list[str], str | None]:
        """(run ids, baseline): the ticked runs with the Compare baseline, else the selected run."""
        checked = self.history.checked_run_ids()
        if len(checked) >= 2:
            return checked, self.compare.baseline.currentData()
        selected = self.history.selected_run_id() or self._shown_run_id
        return ([selected] if selected else []), None

    def export_report(self, path: str | None = None, fmt: str | None = None) -> str | None:
        export = report_export()
        run_ids, baseline = self.export_targets()
        if export is None or not run_ids:
            self.statusBar().showMessage("Select a run (or tick several) to export a report.", 8000)
            return None
        if path is None:
            from profiler.report import default_filename

            filters = ";;".join(EXPORT_FILTERS.values())
            default = Path.home() / default_filename(run_ids, "html", baseline)
            path, chosen = QFileDialog.getSaveFileName(self, "Export report", str(default), filters)
            if not path:
                return None
            fmt = next((k for k, v in EXPORT_FILTERS.items() if v == chosen), "html")
        fmt = fmt or "html"
        try:
            out = export(run_ids, fmt, path, store=self.store, baseline=baseline)
        except Exception as exc:  # noqa: BLE001 - ReportError and whatever a report hits
            self.show_error(f"Export failed: {exc}", "Choose another format or run.")
            return None
        self.statusBar().showMessage(f"exported {out}", 10000)
        return str(out)

    # --- settings ---------------------------------------------------------------------------------
    def set_theme(self, theme: str) -> None:
        app = QApplication.instance()
        if app is not None:
            apply_theme(app, theme)
        self.charts.set_theme(theme)
        self.system.set_theme(theme)
        if getattr(self, "tune_dialog", None) is not None:
            self.tune_dialog.charts.set_theme(theme)
        self.settings.set("view/theme", theme)
        if theme in self.theme_actions:
            self.theme_actions[theme].setChecked(True)

    def remember_config(self, config: RunConfig) -> None:
        self.settings.set("run/last_config", config.to_toml())

    def save_window_settings(self) -> None:
        s = self.settings
        s.set("window/geometry", self.saveGeometry())
        s.set("window/state", self.saveState())
        s.set("window/splitter", self.splitter.saveState())
        s.set("history/header", self.history.table.header().saveState())
        s.set("view/x_axis", self.charts.x_choice)
        s.set("view/smoothing", self.charts.smoothing)
        s.set("view/tab", self.tabs.currentIndex())
        try:
            s.set("run/last_config", self.build_config().to_toml())
        except Exception:  # noqa: BLE001 - settings must never block closing
            pass
        s.sync()

    def restore_window_settings(self) -> None:
        s = self.settings
        geometry = s.get_bytes("window/geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1280, 860)
        state = s.get_bytes("window/state")
        if state is not None:
            self.restoreState(state)
        splitter = s.get_bytes("window/splitter")
        if splitter is not None:
            self.splitter.restoreState(splitter)
        self.history.table.restore_header(s.get_bytes("history/header"))
        self.set_theme(s.theme)
        self.charts.set_x_axis(str(s.get("view/x_axis", "step")))
        try:
            self.charts.set_smoothing(float(s.get("view/smoothing", 0.0)))
            self.tabs.setCurrentIndex(int(s.get("view/tab", 0)))
        except (TypeError, ValueError):
            pass
        text = s.get("run/last_config")
        if text:
            try:
                self.set_config(RunConfig.from_toml(str(text)))
            except ConfigError:
                pass  # an old or damaged remembered config: keep the preset

    # --- dialogs ----------------------------------------------------------------------------------
    def confirm_quit(self) -> bool:
        """While a run goes, ask before quitting (its measurements are kept either way)."""
        if not self.running:
            return True
        answer = QMessageBox.question(
            self, "Quit EffiScope", "A run is in progress. Quit and stop it? What it has "
            "measured so far is kept with the run.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def request_quit(self) -> bool:
        """Ctrl+Q: close, asking first while a run goes."""
        if not self.confirm_quit():
            return False
        self._quit_confirmed = True
        self.close()
        return True

    def shortcut_rows(self) -> list[tuple[str, str]]:
        """(keys, what they do) for every action of the window that has a shortcut."""
        rows = []
        for action in self.actions():
            keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText)
                             for k in action.shortcuts())
            if keys:
                rows.append((keys, action.text().replace("&", "").rstrip("…")))
        return rows

    def show_shortcuts(self) -> None:
        self._shortcuts_dialog = dialogs.show_shortcuts(self, self.shortcut_rows())

    def show_quick_start(self) -> None:
        self._quick_start = dialogs.show_quick_start(self)

    def show_about(self) -> None:
        self._about = dialogs.show_about(self, self.host, str(self.store.home))

    def show_log(self, run_id: str | None) -> None:
        run_id = run_id or self.run_id
        if not run_id:
            return
        try:
            run = self.store.open_run(run_id)
        except Exception as exc:  # noqa: BLE001
            self.show_error(str(exc))
            return
        self._log_dialog = dialogs.show_log(self, run_id, run.log_path)
