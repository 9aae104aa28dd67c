"""The settings side of the app without a worker: widgets <-> config, the technique panel built
from the registry, availability, the estimate, the launch section, settings between sessions."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.main import MainWindow
from app.theme import AppSettings
from profiler.config import RunConfig, validate
from profiler.figures.theory import predict_for_config
from techniques import registry
from tests.gui_support import dispose, fake_worker


def test_config_to_widgets_and_back(window, tmp_path):
    text = tmp_path / "corpus"
    text.mkdir()
    (text / "a.txt").write_text("hello world " * 2000)
    config = RunConfig(name="mine", device="cpu")
    config.model.preset = "gpt-mini"
    config.data.source, config.data.path = "path", str(text)
    config.limits.steps, config.limits.warmup_steps = 77, 3
    config.train.batch_size, config.train.seq_len, config.train.learning_rate = 6, 96, 3e-4
    config.techniques = {"grad_clip": {"max_norm": 0.5}, "precision": {"dtype": "bf16"},
                         "activation_checkpointing": {"every": 2}}
    window.set_config(config)  # config -> widgets
    form, panel = window.form, window.techniques
    assert form.workload.currentData() == "train"
    assert form.model_size.currentData() == "gpt-mini"
    assert form.data_source.currentData() == "path" and form.data_path.text() == str(text)
    assert form.device.currentText() == "cpu"
    assert (form.steps.value(), form.batch_size.value(), form.seq_len.value()) == (77, 6, 96)
    assert form.learning_rate.value() == pytest.approx(3e-4)
    assert panel.rows["grad_clip"].enable.isChecked()
    assert panel.rows["grad_clip"].controls["max_norm"].value() == pytest.approx(0.5)
    assert panel.rows["activation_checkpointing"].controls["every"].value() == 2
    assert not panel.rows["compile"].enable.isChecked()
    built = validate(window.build_config())
    assert built.techniques["grad_clip"] == {"max_norm": 0.5}
    assert built.techniques["precision"] == {"dtype": "bf16"}
    assert built.model.preset == "gpt-mini" and built.data.path == str(text)

    # widgets -> config
    form.data_source.setCurrentIndex(form.data_source.findData("random"))
    form.batch_size.setValue(3)
    panel.rows["grad_clip"].enable.setChecked(False)
    panel.rows["attention"].enable.setChecked(True)
    panel.rows["attention"].controls["implementation"].widget.setCurrentText("math")
    window.launch_form.processes.setValue(1)
    built = validate(window.build_config())
    assert built.data.source == "random" and built.data.path == ""
    assert built.train.batch_size == 3
    assert "grad_clip" not in built.techniques
    assert built.techniques["attention"]["implementation"] == "math"
    assert "optimizer" not in built.techniques  # always on: named only when it differs
    panel.rows["optimizer"].controls["algorithm"].widget.setCurrentText("sgd")
    assert validate(window.build_config()).techniques["optimizer"]["algorithm"] == "sgd"
    assert built.name == "mine" and built.limits.steps == 77


def test_registry_technique_appears_with_the_right_controls(window):
    fake = registry.TechniqueInfo(
        name="fake_knobs", label="Fake knobs", category="speed", stage="loop",
        summary="Turns fake knobs: no gain, no cost.", source="tests",
        params=(registry.Param("flag", bool, True, "a flag"),
                registry.Param("mode", str, "b", "a mode", choices=("a", "b")),
                registry.Param("count", int, 3, "a count", min=1, max=9),
                registry.Param("ratio", float, 0.25, "a share", min=0.0, max=1.0),
                registry.Param("rate", float, 1e-3, "a rate", min=1e-8, max=10.0)),
        mid_run=("enabled", "count"))
    never = registry.TechniqueInfo(
        name="fake_never", label="Fake never", category="memory", stage="loop",
        summary="Cannot run anywhere.", source="tests",
        check=lambda params, caps: "it needs a machine that does not exist")
    registry.register(fake, apply=lambda state, params: "on", change=lambda state, params: "on",
                      remove=lambda state: "off")
    registry.register(never, apply=lambda state, params: "on")
    try:
        panel = window.techniques
        panel.rebuild()
        window.check_settings()
        row = panel.rows["fake_knobs"]
        kinds = {name: control.kind for name, control in row.controls.items()}
        assert kinds == {"flag": "check", "mode": "choice", "count": "int", "ratio": "float",
                         "rate": "float"}
        count = row.controls["count"].widget
        assert count.value() == 3 and "at least 1, at most 9" in count.toolTip()
        assert row.controls["mode"].widget.currentText() == "b"
        assert type(row.controls["rate"].widget).__name__ == "ScientificSpinBox"
        assert "Turns fake knobs" in row.enable.toolTip()
        assert row.enable.isEnabled() and row.reason is None
        row.enable.setChecked(True)
        row.controls["count"].widget.setValue(5)
        assert window.build_config().techniques["fake_knobs"]["count"] == 5
        # grouped under its category, after the category's title
        titles = [panel._rows_host.itemAt(i).widget() for i in range(panel._rows_host.count())]
        speed_title = next(i for i, w in enumerate(titles) if getattr(w, "text", lambda: "")()
                           == "Speed")
        assert row in titles[speed_title:]

        blocked = panel.rows["fake_never"]
        assert not blocked.enable.isEnabled()
        assert "it needs a machine that does not exist" in blocked.enable.toolTip()
        assert panel.reason("fake_never") == "it needs a machine that does not exist"
    finally:
        registry.unregister("fake_knobs")
        registry.unregister("fake_never")
        window.techniques.rebuild()
    assert "fake_knobs" not in window.techniques.rows


def test_availability_follows_machine_workload_and_launch(window):
    panel, launch = window.techniques, window.launch_form
    window.check_settings()
    assert panel.reason("ddp") and "2 or more" in panel.reason("ddp")
    assert not panel.rows["ddp"].enable.isEnabled()
    launch.processes.setValue(2)
    window.check_settings()
    assert panel.reason("ddp") is None and panel.rows["ddp"].enable.isEnabled()
    assert "ddp nor fsdp" in window.run_controls.validation.text()  # validate's own sentence
    panel.rows["ddp"].enable.setChecked(True)
    window.check_settings()
    assert panel.reason("fsdp") and "conflicts with" in panel.reason("fsdp")
    assert "Cannot run yet" not in window.run_controls.validation.text()
    launch.processes.setValue(1)
    panel.rows["ddp"].enable.setChecked(False)
    window.check_settings()
    # compression-only techniques name the workloads they apply to
    assert "infer" in (panel.reason("quantize_int8_dynamic") or "")
    if not window.host["gpus"]:
        assert "GPU" in panel.reason("tf32") or "CUDA" in panel.reason("tf32")
        precision = panel.rows["precision"].controls["dtype"].widget
        fp16 = precision.model().item(precision.findData("fp16"))
        assert not fp16.isEnabled() and "CUDA" in fp16.toolTip()


def test_estimate_matches_theory_and_says_whether_it_fits(window):
    window.form.batch_size.setValue(8)
    window.check_settings()
    config = validate(window.build_config())
    predicted = predict_for_config(config)
    result = window.estimate.result
    assert result["total"] == predicted["total"]
    assert result["parts"]["activations"] == predicted["activations"]
    assert result["fits"] is True and "Fits" in window.estimate.fit.text()
    before = result["parts"]["activations"]
    window.techniques.rows["activation_checkpointing"].enable.setChecked(True)
    window.check_settings()
    assert window.estimate.result["parts"]["activations"] < before / 2
    window.form.model_size.setCurrentIndex(window.form.model_size.findData("gpt2-medium"))
    window.form.batch_size.setValue(4096)
    window.form.seq_len.setValue(1024)
    window.check_settings()
    assert window.estimate.result["fits"] is False
    assert "Does not fit" in window.estimate.fit.text()


def test_remote_host_field_shows_the_validation_sentence(window):
    launch = window.launch_form
    launch.remote.setText("not a host!")
    launch.remote.editingFinished.emit()
    window.check_settings()
    assert launch.remote_note.isVisible()
    assert "launch.ssh" in launch.remote_note.text()
    assert window.build_config().launch.ssh == "not a host!"
    launch.remote.setText("")
    launch.remote.editingFinished.emit()
    window.check_settings()
    assert not launch.remote_note.isVisible()


def test_settings_survive_a_restart(qtbot, effiscope_home):
    first = MainWindow()
    first.form.batch_size.setValue(5)
    first.techniques.rows["grad_clip"].enable.setChecked(True)
    first.charts.set_x_axis("time")
    first.set_theme("dark")
    dispose(first)
    assert AppSettings().theme == "dark"
    second = MainWindow()
    second.restore_window_settings()
    assert second.form.batch_size.value() == 5
    assert second.techniques.rows["grad_clip"].enable.isChecked()
    assert second.charts.by_time and second.axis_actions["time"].isChecked()
    assert second.theme_actions["dark"].isChecked()
    second.set_theme("light")
    dispose(second)


def test_shortcuts_and_about(window, qtbot):
    assert window.action_run.shortcut().toString() == "Ctrl+R"
    assert window.action_stop.shortcut().toString() == "Esc"
    assert window.action_export.shortcut().toString() == "Ctrl+E"
    assert window.action_export.isEnabled()  # profiler.report.export exists in this version
    window.show_about()
    text = window._about.findChild(type(window.state_label), "aboutText").text()
    assert "PySide6" in text and "torch" in text and "CPU:" in text
    window._about.close()
    window.worker_command = fake_worker()
    window.form.steps.setValue(100_000)
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert window.running
    qtbot.waitUntil(lambda: window.link.recorder.samples >= 2, timeout=10_000)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not window.running, timeout=10_000)
    assert window.history.row_status(window.run_id) == "stopped"
