"""What the main window does with a run's messages, mid-run changes and stored runs.

A mixin of MainWindow (app/main.py): the stream of the live run goes to the charts, the history,
the technique panel and the profile view; stored runs are drawn and compared from the store.
"""

from __future__ import annotations

from app.labels import marker_label
from profiler.figures import busy
from profiler.figures.metrics import format_value
from profiler.store import StoreError


def stored_wall_offset(run, messages: list[dict]) -> float:
    """The epoch seconds at a stored run's time 0, for the time-of-day axis: when its stream was
    last written (its last message) less its last sample's time. Good to about a second (the
    summary after the last sample); NaN for a run still going or without samples."""
    import math

    last = next((m for m in reversed(messages) if m.get("type") == "sample"
                 and isinstance(m.get("time"), (int, float))), None)
    ended = any(m.get("type") == "done" for m in messages[-3:]) or \
        run.meta().get("status") not in (None, "running")
    if last is None or not ended:
        return math.nan
    try:
        return run.stream_path.stat().st_mtime - float(last["time"])
    except OSError:
        return math.nan


class RunViews:
    """Messages -> widgets (mixed into MainWindow)."""

    def send_change(self, technique: str, params: dict) -> None:
        """A mid-run change from the technique panel (or the learning rate) to the worker."""
        if self.link is None or not self.link.send_set(technique, params):
            return
        shown = ", ".join(f"{k} = {v}" for k, v in params.items())
        self.statusBar().showMessage(f"sent to the worker: {technique} ({shown})", 8000)

    def _learning_rate_changed(self, value: float) -> None:
        if self.running:
            self.send_change("optimizer", {"learning_rate": float(f"{value:.6g}")})

    def capture_profile(self, steps: int) -> None:
        memory = self.profile.memory.isChecked()  # the CUDA memory snapshot too
        if self.link is not None and self.running and self.link.request_profile(steps, memory):
            self.profile.capturing(steps)
            self.tabs.setCurrentWidget(self.profile)

    def _on_messages(self, batch: list[dict]) -> None:
        self.charts.add_samples(batch)
        self.system.add_samples(batch)
        self.segments.add_live(batch)
        last = next((m for m in reversed(batch) if m["type"] == "sample"), None)
        if last is not None and self.run_id is not None:
            self.summary_view.show_live(self.run_id, last)
            if self.summary_view.run_id == self.run_id:
                self.headline.show_readings(self.charts.live_run_label,
                                            last.get("metrics") or {})
        for message in batch:
            kind = message["type"]
            if kind == "sample":
                self.run_controls.sample(int(message["step"]), float(message["time"]),
                                         str(message.get("phase") or ""))
                self.profile.step_seen(int(message["step"]))
                tokens = message["metrics"].get("tokens_per_s")
                if tokens is None:
                    tokens = message["metrics"].get("decode_tokens_per_s")
                if tokens is not None:
                    self.speed_label.setText(format_value(tokens, "tokens/s"))
                rss = message["metrics"].get("rss_bytes")
                if isinstance(rss, (int, float)):
                    self._last_rss = float(rss)
                if message["metrics"].get("other_cpu_cores") is not None:
                    self.show_load(message["metrics"]["other_cpu_cores"])
            elif kind == "hello":
                cores = (message.get("environment") or {}).get("cpu_cores_logical")
                self.worker_cores = cores if isinstance(cores, int) else None
                device = message.get("device", {})
                torch_version = message.get("versions", {}).get("torch", "?")
                self.device_label.setText(f"Worker: {device.get('name', '?')} "
                                          f"({device.get('default', '?')}), torch {torch_version}")
            elif kind == "started":
                run = message["run"]
                model = run.get("model", {})
                params = model.get("parameters")
                size = f", {params / 1e6:.2f}M parameters" if isinstance(params, int) else ""
                self._set_state(f"running {model.get('preset', '?')}{size} on "
                                f"{run.get('device', '?')}")
                self.run_controls.started(run)
                self.charts.set_started(message)
                self.profile.set_warmup(run.get("warmup_steps") or 0)
            elif kind == "event":
                self._on_event(message)
            elif kind == "profile":
                self.profile.add_profile(message)
                self.profile.set_capturable(self.running, "")
            elif kind == "error":
                self.show_error(f"Worker error ({message['kind']}): {message['message']}",
                                message["hint"], run_id=self.run_id)
            elif kind == "done":
                self.charts.show_percentiles(message.get("summary") or {})
                self._show_results(message.get("summary") or {})

    def show_load(self, other_cores: float | None) -> None:
        """The live reading of other processes' CPU in the status bar, amber when it makes the
        speed figures unreliable; None clears it (no run, or a run that is over)."""
        text, unreliable = busy.live_text(other_cores, self.worker_cores)
        self.load_label.setText(text)
        self.load_label.setStyleSheet("color: #b45309; font-weight: 600;" if unreliable else "")

    def _show_results(self, summary: dict) -> None:
        """What a run concluded in words, kept above the charts (compress: the quality cost)."""
        from app.compress_table import cost_sentence

        sentence = cost_sentence(summary)  # one sentence; the Summary tab has the table
        if sentence:
            self.add_notice(f"Quality cost: {sentence} Original against compressed, measure by "
                            "measure: the Summary tab.")
        if busy.sentence(summary):  # the speed figures were measured beside other work
            self.add_notice(f"Warning: {busy.sentence(summary)}")

    def _on_event(self, message: dict) -> None:
        kind, text = message["kind"], message["message"]
        technique = message.get("technique")
        if kind == "toggle" and isinstance(message.get("step"), int):
            self.charts.add_marker(message["step"], marker_label(message))
            tokens = message.get("tokens_per_step")
            if isinstance(tokens, int) and not isinstance(tokens, bool):
                self.charts.tokens_changed(message["step"], tokens)
                self.run_controls.tokens_changed(message["step"], tokens)
            if technique:
                self.techniques.confirm(technique, message.get("params") or {})
            self.statusBar().showMessage(f"step {message['step']}: {text}", 10000)
        elif kind == "refused":
            if technique:
                self.techniques.refuse(technique, text)
            elif text.startswith("profile"):
                self.profile.status.setText(text)
                self.profile.set_capturable(self.running, "")
            self.statusBar().showMessage(f"refused: {text}", 10000)
        elif kind == "warning":  # kept in view: a status-bar message is gone in seconds
            self.add_notice(f"Warning: {text}")
            self.statusBar().showMessage(text, 10000)

    # --- stored runs ----------------------------------------------------------------------------
    def show_stored_run(self, run_id: str) -> None:
        """Draw a finished run's stored samples (refused while a run is live on the charts)."""
        if self.running and run_id == self.run_id:
            return  # the live run is what the charts show
        if self.running:
            self.statusBar().showMessage("A run is in progress; stop it to look at another.", 8000)
            return
        try:
            run = self.store.open_run(run_id)
        except StoreError as exc:
            self.show_error(str(exc))
            return
        self.charts.clear()
        self.profile.clear()
        self.clear_notices()
        warnings: list[str] = []
        messages = list(run.messages(warnings))
        self.segments.show_stored(messages)
        started = next((m for m in messages if m.get("type") == "started"), None)
        self.charts.set_started(started)
        self.charts.set_wall_offset(stored_wall_offset(run, messages))
        self.profile.set_warmup(((started or {}).get("run") or {}).get("warmup_steps") or 0)
        self.charts.live_run_label = self.history.run_name(run_id)
        count = self.charts.add_samples(messages, live=False)
        changes: list[tuple[int, int]] = []
        for message in messages:
            kind = message.get("type")
            if kind == "event" and message.get("kind") == "warning":
                self.add_notice(f"Warning: {message.get('message')}")
            if kind == "event" and message.get("kind") == "toggle" \
                    and isinstance(message.get("step"), int):
                self.charts.add_marker(message["step"], marker_label(message))
                tokens = message.get("tokens_per_step")
                if isinstance(tokens, int) and not isinstance(tokens, bool):
                    self.charts.tokens_changed(message["step"], tokens)
                    changes.append((message["step"], tokens))
            elif kind == "profile":
                self.profile.add_profile(message)
            elif kind == "done":
                self.charts.show_percentiles(message.get("summary") or {})
                self._show_results(message.get("summary") or {})
        run_info = started.get("run") if isinstance(started, dict) else None
        summary = run.summary() or {}
        status, end = summary.get("status"), summary.get("end")
        last_step = max((m["step"] for m in messages if m.get("type") == "sample"
                         and isinstance(m.get("step"), int)), default=0)
        self.run_controls.showing(
            self.history.run_name(run_id), run_info if isinstance(run_info, dict) else None,
            changes, last_step, f"{status}: {end}" if status and end else str(status or ""))
        self._shown_run_id = run_id
        self.sync_overlays()
        self.charts.redraw_now()
        self.statusBar().showMessage(f"showing {run_id}: {count} samples"
                                     + (f" ({len(warnings)} damaged lines skipped)"
                                        if warnings else ""), 8000)

    def show_summary(self, run_id: str | None) -> None:
        """The selected run's answer: its headline above the tabs, every figure in Summary."""
        summary = self.summary_view.show_run(run_id)
        figures = (summary or {}).get("figures")
        if isinstance(figures, dict) and figures:
            compressed = (summary or {}).get("workload") == "compress"
            self.headline.show_figures(self.history.run_name(run_id), figures, compressed)
        elif run_id is None or run_id != self.run_id or not self.running:
            self.headline.show_empty()

    def load_run_settings(self, run_id: str) -> bool:
        """A past run's config in the form, to run it again or change it."""
        from profiler.config import ConfigError, RunConfig

        if self.running:
            self.statusBar().showMessage("A run is in progress: stop it to load other "
                                         "settings.", 8000)
            return False
        try:
            text = self.store.open_run(run_id).config_text()
            if not text.strip():
                raise ConfigError("", "it has no readable config.toml")
            config = RunConfig.from_toml(text)
        except (StoreError, ConfigError, OSError) as exc:
            self.show_error(f"Cannot load the settings of {run_id}: {exc}",
                            "Its figures are still shown; choose another run to start from.")
            return False
        self.set_config(config)
        self.statusBar().showMessage(f"settings of {self.history.run_name(run_id)} loaded: "
                                     "press Run to run them again", 10000)
        return True

    def set_compared(self, run_ids: list[str]) -> None:
        """The ticked runs: laid over the charts, and in the Compare tab."""
        self.sync_overlays(run_ids)
        self.compare.set_runs(run_ids, {r: self.history.run_name(r) for r in run_ids})

    def sync_overlays(self, run_ids: list[str] | None = None) -> None:
        """The ticked runs over the charts, except the one the charts show anyway: a run both
        shown and ticked is drawn once."""
        run_ids = [r for r in (self.history.checked_run_ids() if run_ids is None else run_ids)
                   if r != self._shown_run_id]
        for run_id in self.charts.overlay_ids():
            if run_id not in run_ids:
                self.charts.remove_overlay(run_id)
        for run_id in run_ids:
            if run_id in self.charts.overlay_ids():
                continue
            try:
                run = self.store.open_run(run_id)
            except StoreError:
                continue
            messages = list(run.messages([]))
            self.charts.set_overlay(run_id, self.history.run_name(run_id), messages,
                                    stored_wall_offset(run, messages))
        self.charts.redraw_now()

    def _run_renamed(self, run_id: str, name: str) -> None:
        """A new name shows at once: legend, Compare tab, the CSV's run column."""
        self.charts.rename_overlay(run_id, name)
        if run_id == self._shown_run_id:
            self.charts.live_run_label = name
        self.charts.redraw_now()
        compared = self.history.checked_run_ids()
        if run_id in compared:
            self.compare.set_runs(compared, {r: self.history.run_name(r) for r in compared})

    def _selection_moved(self) -> None:
        """The red banner belongs to its run: selecting another run puts it away."""
        selected = self.history.selected_run_id()
        if self.banner.isVisible() and self.messages.run_id is not None \
                and selected not in (None, self.messages.run_id):
            self.clear_error()

    def _run_deleted(self, run_id: str) -> None:
        self.charts.remove_overlay(run_id)
        if self._shown_run_id == run_id and not self.running:
            self.charts.clear()
            self.segments.clear()
            self.profile.clear()
