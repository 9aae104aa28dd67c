"""The technique panel, generated from the registry: one row per technique, grouped by category.

Nothing here knows a technique by name. Each row is built from its TechniqueInfo: a check box
(or "always on"), one control per parameter, a tooltip with what it does and costs, and — from
`unavailable_reason` against this machine, the workload and the launch — greyed out with the
reason when it cannot run. While a run goes, a change the technique can take mid-run is sent to
the worker (`live_change`); any other change offers to restart the run with it.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.controls import ParamControl
from techniques import registry

CATEGORY_TITLES = {"optimizer": "Optimizer", "precision": "Precision", "memory": "Memory",
                   "speed": "Speed", "parallel": "Parallel", "compression": "Compression"}


def tooltip_for(info: registry.TechniqueInfo, reason: str | None = None) -> str:
    """What it does and costs (one line), where it comes from, and what can change mid-run."""
    lines = []
    if reason:
        lines.append(f"<b>Not available here:</b> {reason}")
    lines.append(info.summary)
    if info.source:
        lines.append(f"<i>Source: {info.source}</i>")
    if info.mid_run:
        what = ", ".join("on / off" if m == "enabled" else m for m in info.mid_run)
        lines.append(f"Changes mid-run: {what}.")
    else:
        lines.append("Cannot change mid-run: a change restarts the run.")
    return "<p>" + "</p><p>".join(lines) + "</p>"


def conditions(info: registry.TechniqueInfo) -> dict[str, tuple[str, object]]:
    """Parameters that apply to one choice of another parameter: {param: (other, choice)}.

    Read from the metadata's own words: a help text that starts with a choice's name in capitals
    ("SGD momentum …", "SDPA backend …") belongs to that choice, so AdamW shows no momentum."""
    choices = {str(c).lower(): (p.name, c) for p in info.params for c in p.choices
               if isinstance(c, str)}
    out = {}
    for param in info.params:
        first = (param.help.split() or [""])[0]
        if first.isupper() and first.lower() in choices and choices[first.lower()][0] != param.name:
            out[param.name] = choices[first.lower()]
    return out


def workload_reason(info: registry.TechniqueInfo, workload: str) -> str | None:
    """Why a technique does not apply to a workload (None when it does): its own list of
    workloads, or a training technique in a forward-only workload (the stages the worker
    applies there, techniques.registry.INFER_STAGES)."""
    workloads = info.extra.get("workloads")
    if workloads and workload not in workloads:
        return f"applies to the {' and '.join(workloads)} workloads, not to {workload}"
    if workload in registry.FORWARD_WORKLOADS and info.stage not in registry.INFER_STAGES:
        return f"acts on training: a {workload} run only runs the model forward"
    return None


class TechniqueRow(QWidget):
    """One technique: enable box (or always-on title), parameter controls, unavailable reason."""

    changed = Signal(str, str)  # technique, what changed ("enabled" or a parameter name)

    def __init__(self, info: registry.TechniqueInfo, parent: QWidget | None = None):
        super().__init__(parent)
        self.info = info
        self.reason: str | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 2, 0, 2)
        layout.setSpacing(2)
        if info.always_on:  # a title, not a box that looks switched off
            self.enable = QLabel(f"<b>{info.label}</b> · always on")
        else:
            self.enable = QCheckBox(info.label)
            self.enable.setMinimumWidth(160)  # a long label may be clipped, never widen the column
            self.enable.toggled.connect(self._enable_toggled)
        self.enable.setObjectName(f"technique_{info.name}")
        layout.addWidget(self.enable)
        self.body = QWidget()
        form = QFormLayout(self.body)
        form.setContentsMargins(22, 0, 0, 4)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form = form
        self.controls: dict[str, ParamControl] = {}
        self.conditions = conditions(info)
        for param in info.params:
            control = ParamControl(param, self)
            control.changed.connect(lambda name=param.name: self.changed.emit(self.info.name, name))
            control.changed.connect(self._sync_conditions)
            self.controls[param.name] = control
            form.addRow(param.name.replace("_", " "), control.widget)
        self._sync_conditions()
        layout.addWidget(self.body)
        self.note = QLabel()
        self.note.setObjectName("hint")
        self.note.setWordWrap(True)
        self.note.setContentsMargins(22, 0, 0, 0)
        self.note.hide()
        layout.addWidget(self.note)
        self._sync_body()
        self.set_reason(None, {})

    @property
    def enabled(self) -> bool:
        return self.info.always_on or self.enable.isChecked()

    def params(self) -> dict[str, Any]:
        return {name: control.value() for name, control in self.controls.items()}

    def set_state(self, enabled: bool, params: dict[str, Any]) -> None:
        if not self.info.always_on:
            self.enable.blockSignals(True)
            self.enable.setChecked(enabled)
            self.enable.blockSignals(False)
        values = {**self.info.defaults(), **params}
        for name, control in self.controls.items():
            control.set_value(values[name])
        self._sync_conditions()
        self._sync_body()

    def _sync_conditions(self) -> None:
        """Show a parameter only while the choice it belongs to is chosen."""
        for name, (other, choice) in self.conditions.items():
            self.form.setRowVisible(self.controls[name].widget,
                                    self.controls[other].value() == choice)

    def shown_params(self) -> list[str]:
        """Parameters whose control is on screen (with the row switched on)."""
        return [name for name, control in self.controls.items() if self.form.isRowVisible(
            control.widget)]

    def _enable_toggled(self) -> None:
        self._sync_body()
        self.changed.emit(self.info.name, "enabled")

    def _sync_body(self) -> None:
        self.body.setVisible(bool(self.controls) and self.enabled)

    def set_reason(self, reason: str | None, choice_reasons: dict[str, dict]) -> None:
        """Grey out (reason) or enable the row; per-choice reasons grey out single choices."""
        self.reason = reason
        tip = tooltip_for(self.info, reason)
        self.enable.setToolTip(tip)
        if not self.info.always_on:
            self.enable.setEnabled(reason is None or self.enable.isChecked())
        else:  # always on, but not here (the optimizer of an inference run): all of it greyed
            self.enable.setEnabled(reason is None)
            self.body.setEnabled(reason is None)
        for name, control in self.controls.items():
            control.set_choice_reasons(choice_reasons.get(name, {}))
        if reason and self.enabled:  # on, but cannot run here: say so under it
            self.note.setText(f"Cannot run here: {reason}")
            self.note.show()
        else:
            self.note.hide()


class TechniquePanel(QWidget):
    """Every registered technique; `techniques()` / `set_techniques()` are the config's view."""

    changed = Signal()
    live_change = Signal(str, dict)
    """A mid-run change to send to the running worker: (technique, params for `set`)."""
    restart_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.rows: dict[str, TechniqueRow] = {}
        self._running = False
        self._applied: dict[str, dict] = {}
        """What the running worker has (the start config, then each toggle it confirmed)."""
        self._caps: dict = {}
        self._workload = "train"
        self._extra: dict[str, dict] = {}
        self._named: set[str] = set()
        self._parked: dict[str, dict] = {}
        """Techniques a workload switch unticked (with their parameters), ticked again when a
        workload they apply to comes back."""
        """Always-on techniques the loaded config names explicitly: kept explicit."""
        """Techniques a loaded config names that the registry does not know: kept as they are."""
        self._pending: tuple[str, bool, dict] | None = None
        """A change that cannot apply mid-run: (technique, enabled, params), kept for a restart
        while the row shows what the run has."""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.offer = self._build_offer()
        self.workload_note = QLabel()
        self.workload_note.setObjectName("hint")
        self.workload_note.setWordWrap(True)
        self.workload_note.hide()
        layout.addWidget(self.workload_note)
        self._rows_host = QVBoxLayout()
        self._rows_host.setSpacing(2)
        layout.addLayout(self._rows_host)
        self.rebuild()

    def _build_offer(self) -> QFrame:
        frame = QFrame()
        frame.setObjectName("offerBar")
        row = QVBoxLayout(frame)
        row.setContentsMargins(6, 6, 6, 6)
        self.offer_label = QLabel()
        self.offer_label.setWordWrap(True)
        row.addWidget(self.offer_label)
        buttons = QHBoxLayout()
        self.restart_button = QPushButton("Restart with this change")
        self.restart_button.clicked.connect(self._restart)
        self.undo_button = QPushButton("Undo")
        self.undo_button.clicked.connect(self.revert)
        buttons.addWidget(self.restart_button)
        buttons.addWidget(self.undo_button)
        buttons.addStretch(1)
        row.addLayout(buttons)
        frame.hide()
        return frame

    def rebuild(self) -> None:
        """(Re)build the rows from the registry, keeping the current choices."""
        keep = self.techniques() if self.rows else {}
        self._rows_host.removeWidget(self.offer)
        while self._rows_host.count():
            item = self._rows_host.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.rows.clear()
        infos = registry.all_techniques()
        for category in registry.CATEGORIES:
            members = [info for info in infos if info.category == category]
            if not members:
                continue
            title = QLabel(CATEGORY_TITLES.get(category, category.title()))
            title.setObjectName("categoryTitle")
            self._rows_host.addWidget(title)
            for info in members:
                row = TechniqueRow(info)
                row.changed.connect(self._row_changed)
                self.rows[info.name] = row
                self._rows_host.addWidget(row)
        self._rows_host.addWidget(self.offer)
        self.set_techniques(keep)

    # --- config <-> widgets ----------------------------------------------------------------------
    def techniques(self) -> dict[str, dict]:
        """Enabled techniques as the config holds them: name -> parameters.

        An always-on technique is named only when its parameters differ from the defaults the
        worker applies anyway, and never for a workload it does not apply to (so an inference
        run is not told about an optimizer it ignores)."""
        out = {name: dict(params) for name, params in self._extra.items()}
        for name, row in self.rows.items():
            params = row.params()
            if row.info.always_on and params == row.info.defaults() and name not in self._named:
                continue
            if row.info.always_on and workload_reason(row.info, self._workload):
                continue  # the optimizer of an inference run: the worker would ignore it
            if row.enabled:
                out[name] = params
        return out

    def set_techniques(self, techniques: dict[str, dict]) -> None:
        self._parked = {}
        self.workload_note.hide()
        self._extra = {name: dict(p) for name, p in techniques.items() if name not in self.rows}
        self._named = {name for name in techniques if name in self.rows}
        for name, row in self.rows.items():
            row.set_state(name in techniques, techniques.get(name, {}))
        self.refresh_availability()

    # --- availability ----------------------------------------------------------------------------
    def set_context(self, caps: dict, workload: str) -> None:
        """The machine (with the job's world_size) and the workload that availability depends on.
        A new workload unticks what does not apply to it (and ticks again what it had unticked,
        once a workload it applies to comes back), saying so under the panel."""
        self._caps = dict(caps)
        changed = workload != self._workload
        self._workload = workload
        if changed and not self._running:
            self._follow_workload()
        self.refresh_availability()

    def _follow_workload(self) -> None:
        unticked, back = [], []
        for name, row in self.rows.items():
            if row.info.always_on:
                continue
            why = workload_reason(row.info, self._workload)
            if why and row.enabled:
                self._parked[name] = row.params()
                row.set_state(False, row.params())
                unticked.append(row.info.label)
            elif not why and name in self._parked:
                row.set_state(True, self._parked.pop(name))
                back.append(row.info.label)
        words = []
        if unticked:
            words.append(f"Unticked for {self._workload}: {', '.join(unticked)} (they do not "
                         "apply to it).")
        if back:
            words.append(f"Ticked again: {', '.join(back)}.")
        self.workload_note.setText(" ".join(words))
        self.workload_note.setVisible(bool(words))
        if unticked or back:
            self.changed.emit()

    @property
    def workload(self) -> str:
        return self._workload

    def reason(self, name: str) -> str | None:
        return self.rows[name].reason

    def refresh_availability(self) -> None:
        enabled = {name for name, row in self.rows.items() if row.enabled}
        for row in self.rows.values():
            info = row.info
            params = row.params()
            reason = self._why_not(info, params, enabled)
            choice_reasons: dict[str, dict] = {}
            if reason is None:
                for pname, control in row.controls.items():
                    if control.param.choices:
                        choice_reasons[pname] = {
                            choice: registry.unavailable_reason(info, {**params, pname: choice},
                                                                self._caps)
                            for choice in control.param.choices}
            row.set_reason(reason, choice_reasons)

    def _why_not(self, info: registry.TechniqueInfo, params: dict, enabled: set[str]) -> str | None:
        why = workload_reason(info, self._workload)
        if why:
            return why
        for other in enabled - {info.name}:
            other_info = self.rows[other].info
            if other in info.conflicts or info.name in other_info.conflicts:
                return f"conflicts with {other_info.label}, which is on"
        if not self._caps:
            return None
        return registry.unavailable_reason(info, params, self._caps)

    # --- while a run goes -------------------------------------------------------------------------
    def set_running(self, running: bool, applied: dict[str, dict] | None = None) -> None:
        self._running = running
        self._applied = {k: dict(v) for k, v in (applied or {}).items()}
        if not running:
            self.offer.hide()
            self._pending = None

    def confirm(self, name: str, params: dict) -> None:
        """The worker applied a change (a toggle event): it is now the running state."""
        if params.get("enabled") is False:
            self._applied.pop(name, None)
        else:
            changes = {k: v for k, v in params.items() if k != "enabled"}
            self._applied[name] = {**self._applied.get(name, {}), **changes}

    def refuse(self, name: str, message: str) -> None:
        """The worker refused a change: put the row back and say why, under that row."""
        if name in self.rows:
            self.rows[name].set_state(name in self._applied, self._applied.get(name, {}))
            self.refresh_availability()
        self._show_offer(f"Not applied: {message}", restart=False, under=name)

    def revert(self) -> None:
        """Back to what the running worker has (or drop the pending offer when idle)."""
        self._pending = None
        for name, row in self.rows.items():
            row.set_state(name in self._applied or row.info.always_on, self._applied.get(name, {}))
        self.offer.hide()
        self.refresh_availability()
        self.changed.emit()

    def _restart(self) -> None:
        """Restart with the change the run could not take: the row takes it now."""
        self.offer.hide()
        if self._pending is not None:
            name, enabled, params = self._pending
            self._pending = None
            self.rows[name].set_state(enabled, params)
            self.refresh_availability()
            self.changed.emit()
        self.restart_requested.emit()

    def _show_offer(self, text: str, restart: bool, under: str | None = None) -> None:
        """The offer right under the row the user changed, where the eye and the mouse are."""
        self.offer_label.setText(text)
        self.restart_button.setVisible(restart)
        self.undo_button.setText("Keep going without it" if restart else "OK")
        self._rows_host.removeWidget(self.offer)
        if under in self.rows:
            self._rows_host.insertWidget(self._rows_host.indexOf(self.rows[under]) + 1,
                                         self.offer)
        else:
            self._rows_host.addWidget(self.offer)
        self.offer.show()

    def _row_changed(self, name: str, what: str) -> None:
        self.refresh_availability()
        self.changed.emit()
        if not self._running:
            return
        row = self.rows[name]
        info = row.info
        if what in info.mid_run:
            if what == "enabled":
                params = {"enabled": row.enabled}
                if row.enabled:
                    params.update({k: v for k, v in row.params().items() if k in info.mid_run})
            else:
                params = {what: row.params()[what]}
            self.live_change.emit(name, params)
            return
        # The run goes on without the change: the row says what the run has (never a tick for a
        # technique the run does not use); the change waits for a restart.
        self._pending = (name, row.enabled, row.params())
        row.set_state(name in self._applied or info.always_on, self._applied.get(name, {}))
        self.refresh_availability()
        if what == "enabled":
            part = f"switching it {'on' if self._pending[1] else 'off'}"
        else:
            part = f"its {what.replace('_', ' ')}"
        self._show_offer(f"{info.label}: {part} cannot change while a run goes; the run goes "
                         "on as it was. Restart it with this change?", restart=True, under=name)



def category_of_rows(panel: TechniquePanel) -> dict[str, list[str]]:
    """Category -> technique names in panel order (tests and the About box read it)."""
    out: dict[str, list[str]] = {}
    for name, row in panel.rows.items():
        out.setdefault(row.info.category, []).append(name)
    return out
