"""The run form: workload, model, data, device and the settings people change most, as a RunConfig.

A shipped preset (or a loaded config) supplies everything; the form shows and overrides the
common knobs, and `set_config` / `build_config` go both ways. Values are checked by
profiler.config.validate, not here, so the GUI and the CLI refuse the same things with the same
sentence.
"""

from __future__ import annotations

import copy
import re

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from app.controls import INT_LIMIT, TYPED_INT_LOW, ScientificSpinBox
from profiler import config as config_module
from profiler.config import PRESETS_DIR, ConfigError, RunConfig, list_presets
from profiler.models.presets import GPT_PRESETS

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_PRESET = "nano"
# Short words in the box, so nothing is cut in a narrow column; the longer account is each
# choice's tooltip in the open list.
WORKLOAD_LABELS = {"train": "Train", "infer": "Inference", "compress": "Compress",
                   "distill": "Distill"}
WORKLOAD_TIPS = {"train": "Language modelling: train and validation loss, speed, memory",
                 "infer": "Latency (prefill, time to first token, per-token decode) and perplexity",
                 "compress": "Quantize or prune, then measure size, speed and quality against the "
                             "original model",
                 "distill": "Train a student on a teacher's outputs (teacher → student)"}
MODEL_SOURCE_LABELS = {"preset": "Built-in GPT", "run": "Past run's weights",
                       "checkpoint": "Checkpoint", "hf": "Hugging Face"}
MODEL_SOURCE_TIPS = {"preset": "A built-in GPT preset with random weights",
                     "run": "The weights a past run saved (Save final weights); a train run "
                            "continues training them",
                     "checkpoint": "A .safetensors file or a folder of them",
                     "hf": "A Hugging Face model from the local cache (nothing is downloaded)"}
DATA_LABELS = {"stdlib": "Python stdlib", "path": "Text file/folder", "random": "Random tokens"}
DATA_TIPS = {"stdlib": "The Python standard library's own source files (the default: on every "
                       "machine)", "path": "A text file or a folder of text of yours",
             "random": "Random tokens: for pure speed runs (the loss means nothing)"}


def preset_description(name: str) -> str:
    """The preset file's first comment line, which says what the preset is for."""
    try:
        with (PRESETS_DIR / f"{name}.toml").open(encoding="utf-8") as fh:
            first = fh.readline().strip()
    except OSError:
        return ""
    return first.lstrip("#").strip()


FIELD_LABELS = {"limits.steps": "Steps", "train.batch_size": "Batch size",
                "infer.batch_size": "Batch size", "train.seq_len": "Sequence length",
                "train.learning_rate": "Learning rate", "infer.prompt_len": "Prompt tokens",
                "infer.gen_len": "Generated tokens", "infer.repeats": "Repeats",
                "compress.finetune_steps": "Fine-tune steps", "distill.teacher_train_steps":
                "Teacher steps", "distill.alpha": "Distill weight", "distill.teacher.preset":
                "Teacher", "model.preset": "Size", "model.run_id": "Model › Run",
                "model.path": "Model › Weights", "data.path": "Data › Text", "device": "Device",
                "launch.ssh": "Remote host", "launch.nproc_per_node": "Processes per node"}
"""Config keys as the labels on screen: a sentence names the field the user can see."""


def on_screen(message: str) -> str:
    """A validate() sentence with its config key ("train.seq_len: …") turned into the label on
    screen ("Sequence length: …"); technique keys become "Technique › parameter"."""
    key, sep, rest = message.partition(": ")
    if not sep or " " in key:
        return _named_techniques(message)
    rest = _named_techniques(rest)
    if key in FIELD_LABELS:
        return f"{FIELD_LABELS[key]}: {rest}"
    if key == "techniques":
        return f"Techniques: {rest}"
    parts = key.split(".")
    if parts[0] == "techniques" and len(parts) >= 2:
        words = " ".join(p.replace("_", " ") for p in parts[2:])
        return f"{_technique_label(parts[1])}{' › ' + words if words else ''}: {rest}"
    return f"{key}: {rest}"


def _technique_label(name: str) -> str:
    try:
        from techniques import registry

        return registry.get(name).label
    except Exception:  # noqa: BLE001 - an unknown technique keeps its name
        return name


def _named_techniques(text: str) -> str:
    """"add e.g. [techniques.prune_magnitude]" (the TOML a config file needs) as the panel's
    words: "tick e.g. “Magnitude pruning”"."""
    text = re.sub(r"\badd (e\.g\. )?(?=\[techniques\.)", lambda m: "tick " + (m.group(1) or ""),
                  text)
    return re.sub(r"\[?techniques\.(\w+)\]?", lambda m: f"“{_technique_label(m.group(1))}”",
                  text)


def saved_weight_runs() -> list[tuple[str, str]]:
    """(label, run id) of every stored run that saved its final weights, newest first."""
    from profiler.store import RunStore

    out = []
    try:
        store = RunStore()
        for row in store.list_runs():
            if (store.runs_dir / row["id"] / "model.safetensors").is_file():
                out.append((f"{row.get('name') or row['id']} ({row['id']})", row["id"]))
    except Exception:  # noqa: BLE001 - an unreadable store just offers no runs
        pass
    return out


def _spin(low: int, high: int, tip: str) -> QSpinBox:
    # Any typed number is kept: validate() says in words what is out of range (never a silent
    # correction of 0 to 1 or 100000 to the maximum). low / high are what the arrows advise.
    box = QSpinBox()
    box.setRange(TYPED_INT_LOW, INT_LIMIT)
    box.setProperty("advised", (low, high))
    box.setToolTip(tip)
    box.setKeyboardTracking(False)
    return box


def _combo(items: dict[str, str], name: str, tips: dict[str, str] | None = None) -> QComboBox:
    box = QComboBox()
    box.setObjectName(name)
    for value, label in items.items():
        box.addItem(label, value)
        if tips and value in tips:
            box.setItemData(box.count() - 1, tips[value], Qt.ItemDataRole.ToolTipRole)
    return box


def _select(box: QComboBox, value: str) -> None:
    index = box.findData(value)
    if index < 0:  # a value from a config file that the list lacks: show it as it is
        box.addItem(value, value)
        index = box.count() - 1
    box.setCurrentIndex(index)


class PathField(QWidget):
    """A path line edit with File… and Folder… buttons."""

    changed = Signal()

    def __init__(self, placeholder: str, file_filter: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.file_filter = file_filter
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(4)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.editingFinished.connect(self.changed.emit)
        row.addWidget(self.edit, 1)
        self.file_button = QPushButton("File…")
        self.file_button.clicked.connect(self._pick_file)
        self.folder_button = QPushButton("Folder…")
        self.folder_button.clicked.connect(self._pick_folder)
        for button in (self.file_button, self.folder_button):
            button.setObjectName("smallButton")
            row.addWidget(button)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt naming, like QLineEdit
        self.edit.setText(text)

    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a file", self.text(), self.file_filter)
        if path:
            self.edit.setText(path)
            self.changed.emit()

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a folder", self.text())
        if path:
            self.edit.setText(path)
            self.changed.emit()


class RunForm(QWidget):
    """Workload, preset, model source, data, device, and the run's common numbers."""

    preset_loaded = Signal(str)
    changed = Signal()

    def __init__(self, cuda_available: bool, cuda_reason: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.base: RunConfig = RunConfig()
        self.preset_error = ""
        self._loading = False
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.rows = form

        workloads = {w: WORKLOAD_LABELS.get(w, w) for w in config_module.WORKLOADS}
        self.workload = _combo(workloads, "workloadCombo", WORKLOAD_TIPS)
        self.workload.setToolTip("What the worker does with the model")
        form.addRow("Workload", self.workload)
        self.preset = QComboBox()
        self.preset.setObjectName("presetCombo")
        for name in list_presets():
            self.preset.addItem(name)
            self.preset.setItemData(self.preset.count() - 1, preset_description(name),
                                    Qt.ItemDataRole.ToolTipRole)
        self.preset.setToolTip("A shipped starting point: model size, data and settings")
        form.addRow("Preset", self.preset)
        sources = getattr(config_module, "MODEL_SOURCES", ("preset",))
        self.model_source = _combo({s: MODEL_SOURCE_LABELS[s] for s in sources
                                    if s in MODEL_SOURCE_LABELS}, "modelSourceCombo",
                                   MODEL_SOURCE_TIPS)
        form.addRow("Model", self.model_source)
        self.model_size = QComboBox()
        self.model_size.setObjectName("modelSizeCombo")
        for name, shape in GPT_PRESETS.items():
            self.model_size.addItem(name, name)
            self.model_size.setItemData(self.model_size.count() - 1, shape.description,
                                        Qt.ItemDataRole.ToolTipRole)
        form.addRow("Size", self.model_size)
        self.model_run = QComboBox()
        self.model_run.setObjectName("modelRunCombo")
        self.model_run.setToolTip("Past train runs that saved their weights (Save weights on)")
        form.addRow("Run", self.model_run)
        self.model_path = PathField("a .safetensors file or a folder", "Weights (*.safetensors)")
        form.addRow("Weights", self.model_path)
        self.hf_model = QComboBox()
        self.hf_model.setEditable(True)
        self.hf_model.setObjectName("hfModelCombo")
        self.hf_model.setToolTip("Models in the local Hugging Face cache, or type a folder path; "
                                 "nothing is downloaded")
        form.addRow("HF model", self.hf_model)
        self.model_note = QLabel()
        self.model_note.setObjectName("hint")
        self.model_note.setWordWrap(True)
        form.addRow(self.model_note)

        self.data_source = _combo(DATA_LABELS, "dataSourceCombo", DATA_TIPS)
        self.data_source.setToolTip("The text the model reads")
        form.addRow("Data", self.data_source)
        self.data_path = PathField("a text file or a folder of text", "Text (*.txt *.md *.py *)")
        form.addRow("Text", self.data_path)

        self.device = QComboBox()
        self.device.setObjectName("deviceCombo")
        self.device.addItems(DEVICES)
        self.device.setItemData(0, "CUDA when the worker finds a GPU, else the CPU",
                                Qt.ItemDataRole.ToolTipRole)
        if not cuda_available:
            item = self.device.model().item(DEVICES.index("cuda"))
            item.setEnabled(False)
            item.setToolTip(f"not available here: {cuda_reason or 'no NVIDIA GPU found'}")
        form.addRow("Device", self.device)
        self.steps = _spin(1, 1_000_000, "Optimizer steps to run. Warmup steps (excluded from "
                           "speed figures) are the preset's, fewer for very short runs.")
        form.addRow("Steps", self.steps)
        self.batch_size = _spin(1, 4096, "Sequences per step")
        form.addRow("Batch size", self.batch_size)
        # Deliberately above every context length: validate() explains the limit in words.
        self.seq_len = _spin(2, 16_384, "Tokens per sequence; at most the model's context")
        form.addRow("Sequence length", self.seq_len)
        self.learning_rate = ScientificSpinBox(1e-6, 1.0)
        self.learning_rate.setObjectName("learningRate")
        self.learning_rate.setToolTip("Peak learning rate (arrows double / halve it); while a "
                                      "run goes, a new value is sent to it")
        form.addRow("Learning rate", self.learning_rate)
        self.save_weights = QCheckBox("Save final weights")
        self.save_weights.setToolTip("Keep model.safetensors in the run folder, so inference, "
                                     "compression and distillation runs can load it")
        form.addRow("", self.save_weights)
        self.prompt_len = _spin(1, 16_384, "Prompt tokens per sequence, one prefill")
        form.addRow("Prompt tokens", self.prompt_len)
        self.gen_len = _spin(1, 16_384, "Tokens generated per sequence, one decode step each")
        form.addRow("Generated tokens", self.gen_len)
        self.repeats = _spin(1, 100_000, "Timed generations; p50 / p90 / p99 are taken over them")
        form.addRow("Repeats", self.repeats)
        self.finetune_steps = _spin(0, 1_000_000, "Training steps after pruning (0 = none)")
        form.addRow("Fine-tune steps", self.finetune_steps)
        self.teacher = QComboBox()
        self.teacher.setObjectName("teacherCombo")
        self.teacher.setToolTip("The teacher: a built-in preset (random weights unless trained "
                                "first, Teacher steps) or the weights a past run saved")
        self._fill_teachers()
        form.addRow("Teacher", self.teacher)
        self.teacher_steps = _spin(0, 1_000_000, "Train the teacher this many steps first")
        form.addRow("Teacher steps", self.teacher_steps)
        self.teacher_note = QLabel()
        self.teacher_note.setObjectName("fieldError")
        self.teacher_note.setWordWrap(True)
        form.addRow(self.teacher_note)
        self.alpha = QDoubleSpinBox()
        self.alpha.setRange(-1e6, 1e6)  # validate() says what is out of range
        self.alpha.setSingleStep(0.1)
        self.alpha.setToolTip("Weight of the distillation term against plain cross-entropy")
        form.addRow("Distill weight", self.alpha)

        self.preset.currentTextChanged.connect(self.load_preset)
        for box in (self.workload, self.model_source, self.data_source):
            box.currentIndexChanged.connect(self._show_rows)
        self.model_size.currentIndexChanged.connect(self._describe_model)
        self.teacher.currentIndexChanged.connect(self._show_teacher_warning)
        self.teacher_steps.valueChanged.connect(self._show_teacher_warning)
        self.workload.currentIndexChanged.connect(self._show_teacher_warning)
        for widget in self._inputs():
            signal = (getattr(widget, "currentIndexChanged", None)
                      or getattr(widget, "valueChanged", None) or getattr(widget, "toggled", None)
                      or widget.changed)
            signal.connect(self._emit_changed)
        self.hf_model.editTextChanged.connect(self._emit_changed)
        start = DEFAULT_PRESET if DEFAULT_PRESET in list_presets() else self.preset.itemText(0)
        self.preset.setCurrentText(start)
        self.load_preset(start)

    def _inputs(self) -> list[QWidget]:
        return [self.workload, self.model_source, self.model_size, self.model_run,
                self.model_path, self.data_source, self.data_path, self.device, self.steps,
                self.batch_size, self.seq_len, self.learning_rate, self.save_weights, self.prompt_len,
                self.gen_len, self.repeats, self.finetune_steps, self.teacher, self.teacher_steps,
                self.alpha]

    def _emit_changed(self, *_: object) -> None:
        if not self._loading:
            self.changed.emit()

    # --- visibility ---------------------------------------------------------------------------
    def _show_rows(self) -> None:
        workload = self.workload.currentData()
        source = self.model_source.currentData()
        visible = {
            self.model_size: source == "preset", self.model_run: source == "run",
            self.model_path: source == "checkpoint", self.hf_model: source == "hf",
            self.data_path: self.data_source.currentData() == "path",
            self.steps: workload in ("train", "distill"),
            self.learning_rate: workload in ("train", "distill"),
            self.save_weights: workload in ("train", "distill")
            and hasattr(self.base.train, "save_checkpoint"),
            self.prompt_len: workload in ("infer", "compress"),
            self.gen_len: workload in ("infer", "compress"),
            self.repeats: workload in ("infer", "compress"),
            self.finetune_steps: workload == "compress",
            self.teacher: workload == "distill", self.teacher_steps: workload == "distill",
            self.teacher_note: workload == "distill" and bool(self.teacher_warning()),
            self.alpha: workload == "distill",
        }
        for widget, show in visible.items():
            self.rows.setRowVisible(widget, show)
        if source == "run":
            self._fill_runs()
        if workload == "distill":
            self._fill_teachers()
        if source == "hf":
            self._fill_hf_models()
        self._describe_model()

    def _fill_teachers(self, keep: str | None = None) -> None:
        """The presets ("preset:NAME"), then every past run that saved its weights
        ("run:RUN_ID"): the teacher to distil."""
        keep = keep or self.teacher.currentData()
        self.teacher.blockSignals(True)
        self.teacher.clear()
        for name, shape in GPT_PRESETS.items():
            self.teacher.addItem(name, f"preset:{name}")
            self.teacher.setItemData(self.teacher.count() - 1, f"{shape.description} (random "
                                     "weights: train it first with Teacher steps)",
                                     Qt.ItemDataRole.ToolTipRole)
        for label, run_id in saved_weight_runs():
            self.teacher.addItem(f"run: {label}", f"run:{run_id}")
            self.teacher.setItemData(self.teacher.count() - 1, f"the weights run {run_id} saved",
                                     Qt.ItemDataRole.ToolTipRole)
        index = self.teacher.findData(keep) if keep else -1
        if index < 0 and keep and keep.startswith("run:"):  # a run the store no longer lists
            self.teacher.addItem(keep.replace(":", ": ", 1), keep)
            index = self.teacher.count() - 1
        if index < 0:
            index = max(0, self.teacher.findData("preset:gpt-mini"))
        self.teacher.setCurrentIndex(index)
        self.teacher.blockSignals(False)

    def teacher_warning(self) -> str:
        """A preset teacher trained for 0 steps has random weights: it teaches nothing."""
        source = str(self.teacher.currentData() or "preset:").partition(":")[0]
        if source == "preset" and self.teacher_steps.value() == 0:
            return ("This teacher has random weights and 0 teacher steps: it teaches the "
                    "student nothing. Set Teacher steps, or pick a past run's weights.")
        return ""

    def _show_teacher_warning(self) -> None:
        text = self.teacher_warning() if self.workload.currentData() == "distill" else ""
        self.teacher_note.setText(text)
        self.rows.setRowVisible(self.teacher_note, bool(text))

    def _fill_runs(self) -> None:

        keep = self.model_run.currentData() or getattr(self.base.model, "run_id", "")
        self.model_run.blockSignals(True)
        self.model_run.clear()
        for label, run_id in saved_weight_runs():
            self.model_run.addItem(label, run_id)
        if self.model_run.count() == 0:
            self.model_run.addItem("no saved weights yet: train with Save weights", "")
        if keep:
            _select(self.model_run, keep)
        self.model_run.blockSignals(False)

    def _fill_hf_models(self) -> None:
        if self.hf_model.count():
            return
        try:
            from profiler.models.hf_cache import list_cached_models

            models = [m for m in list_cached_models() if m.get("usable")]
        except Exception:  # noqa: BLE001 - no cache, or the module is not there
            models = []
        for item in models:
            self.hf_model.addItem(item["id"], item["id"])

    def _describe_model(self) -> None:
        source = self.model_source.currentData()
        if source == "preset":
            shape = GPT_PRESETS.get(self.model_size.currentData() or "")
            text = (f"{shape.description}, context {shape.block_size} tokens" if shape else "")
        elif source == "run":
            text = "The shape comes with the saved weights."
        elif source == "hf":
            text = "" if self.hf_model.count() else "No models in the local Hugging Face cache."
        else:
            text = "The shape comes with the checkpoint."
        if self.preset_error:
            text = self.preset_error
        self.model_note.setText(text)

    # --- config <-> widgets ---------------------------------------------------------------------
    def load_preset(self, name: str) -> None:
        """Put a preset's values into the form; a broken preset file is reported, not raised."""
        try:
            config = RunConfig.load(PRESETS_DIR / f"{name}.toml")
        except ConfigError as exc:
            self.preset_error = f"preset {name}: {exc}"
            self.model_note.setText(self.preset_error)
            return
        self.preset_error = ""
        config.name = name
        self.set_config(config)
        self.model_note.setToolTip(preset_description(name))
        self.preset_loaded.emit(name)

    def set_config(self, config: RunConfig) -> None:
        """Show a config: every widget takes its value; the rest rides along in `base`."""
        self._loading = True
        try:
            self.base = copy.deepcopy(config)
            if self.preset.findText(config.name) >= 0 and self.preset.currentText() != config.name:
                self.preset.blockSignals(True)
                self.preset.setCurrentText(config.name)
                self.preset.blockSignals(False)
            _select(self.workload, config.workload)
            model = config.model
            _select(self.model_source, getattr(model, "source", "preset"))
            _select(self.model_size, model.preset)
            self.model_path.setText(getattr(model, "path", ""))
            if getattr(model, "source", "") == "hf":
                self.hf_model.setEditText(model.path)
            _select(self.data_source, config.data.source)
            self.data_path.setText(config.data.path)
            index = self.device.findText(config.device)
            self.device.setCurrentIndex(index if index >= 0 and self._enabled(index) else 0)
            self.steps.setValue(config.limits.steps)
            infer = getattr(config, "infer", None)
            batch = (infer.batch_size if infer is not None and config.workload
                     in ("infer", "compress") else config.train.batch_size)
            self.batch_size.setValue(batch)
            self.seq_len.setValue(config.train.seq_len)
            self.learning_rate.setValue(config.train.learning_rate)
            self.save_weights.setChecked(bool(getattr(config.train, "save_checkpoint", False)))
            infer = getattr(config, "infer", None)
            if infer is not None:
                self.prompt_len.setValue(infer.prompt_len)
                self.gen_len.setValue(infer.gen_len)
                self.repeats.setValue(infer.repeats)
            if hasattr(config, "compress"):
                self.finetune_steps.setValue(config.compress.finetune_steps)
            if hasattr(config, "distill"):
                teacher = config.distill.teacher
                if getattr(teacher, "source", "preset") == "run" and teacher.run_id:
                    self._fill_teachers(keep=f"run:{teacher.run_id}")
                else:
                    _select(self.teacher, f"preset:{teacher.preset}")
                self.teacher_steps.setValue(config.distill.teacher_train_steps)
                self.alpha.setValue(config.distill.alpha)
            self._show_rows()
            if getattr(model, "source", "") == "run":
                _select(self.model_run, model.run_id)
        finally:
            self._loading = False
        self.changed.emit()

    def _enabled(self, index: int) -> bool:
        return bool(self.device.model().item(index).isEnabled())

    def build_config(self) -> RunConfig:
        """The base config with the form's values on top (not validated: the caller does that)."""
        config = copy.deepcopy(self.base)
        config.name = self.preset.currentText() if not config.name else config.name
        config.workload = self.workload.currentData()
        source = self.model_source.currentData()
        if hasattr(config.model, "source"):
            config.model.source = source
        config.model.preset = self.model_size.currentData() or config.model.preset
        if source == "run":
            config.model.run_id = self.model_run.currentData() or ""
        elif source == "checkpoint":
            config.model.path = self.model_path.text()
        elif source == "hf":
            config.model.path = self.hf_model.currentText().strip()
        config.data.source = self.data_source.currentData()
        config.data.path = self.data_path.text() if config.data.source == "path" else ""
        config.device = self.device.currentText()
        config.limits.steps = self.steps.value()
        config.limits.warmup_steps = max(0, min(config.limits.warmup_steps, config.limits.steps - 1))
        if config.workload in ("infer", "compress") and hasattr(config, "infer"):
            config.infer.batch_size = self.batch_size.value()  # sequences per generation
        else:
            config.train.batch_size = self.batch_size.value()
        config.train.seq_len = self.seq_len.value()
        config.train.learning_rate = float(f"{self.learning_rate.value():.6g}")
        if hasattr(config.train, "save_checkpoint"):
            config.train.save_checkpoint = self.save_weights.isChecked()
        if hasattr(config, "infer"):
            config.infer.prompt_len = self.prompt_len.value()
            config.infer.gen_len = self.gen_len.value()
            config.infer.repeats = self.repeats.value()
        if hasattr(config, "compress"):
            config.compress.finetune_steps = self.finetune_steps.value()
        if hasattr(config, "distill"):
            source, _sep, value = (self.teacher.currentData()
                                   or f"preset:{config.distill.teacher.preset}").partition(":")
            teacher = config.distill.teacher
            if source == "run":
                teacher.source, teacher.run_id = "run", value
            else:
                teacher.source, teacher.preset = "preset", value
            config.distill.teacher_train_steps = self.teacher_steps.value()
            config.distill.alpha = float(f"{self.alpha.value():.4g}")
        return config

    def set_running(self, running: bool) -> None:
        """Settings are frozen while a run uses them; the learning rate can change mid-run."""
        for widget in self._inputs() + [self.preset, self.hf_model]:
            if widget is not self.learning_rate:
                widget.setEnabled(not running)
