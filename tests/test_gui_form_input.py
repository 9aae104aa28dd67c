"""The settings form as a user's hands meet it: a click on a technique check box's real square
toggles it, inference uses the form's batch size, the wheel over a field scrolls the panel and
changes nothing, and a typed out-of-range value is kept and refused in words on screen.
Offscreen; the real-X-server version is tests/test_gui_x11.py."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication, QCheckBox

from profiler.config import RunConfig
from profiler.store import RunStore
from tests.gui_support import (
    fake_worker,
    indicator_centre,
    type_into,
    wheel,
)


def test_every_technique_check_box_toggles_from_a_click_on_its_square(qtbot, window):
    scroll = window.settings_scroll
    clicked = 0
    for name, row in window.techniques.rows.items():
        box = row.enable
        if not isinstance(box, QCheckBox) or not box.isEnabled():
            continue
        QApplication.processEvents()  # the last toggle's layout change, before aiming
        scroll.ensureWidgetVisible(box)
        QApplication.processEvents()
        point = indicator_centre(box)
        # Nothing lies over the square (an invisible ParamControl used to).
        hit = box.window().childAt(box.mapTo(box.window(), point))
        assert hit is box, f"{name}: {hit!r} lies over the check box"
        before = box.isChecked()
        qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=point)
        assert box.isChecked() != before, f"{name}: a click on its square did nothing"
        qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=point)
        assert box.isChecked() == before
        clicked += 1
    assert clicked >= 5  # every one this machine can run (the rest are greyed out)


@pytest.mark.parametrize("workload", ["infer", "compress"])
def test_inference_uses_the_forms_batch_size(qtbot, window, workload):
    window.worker_command = fake_worker()
    form = window.form
    form.workload.setCurrentIndex(form.workload.findData(workload))
    form.device.setCurrentText("cpu")
    type_into(form.batch_size, "16")
    if workload == "compress":
        # Refused in the panel's words (not "[techniques.NAME]" TOML); the user ticks one.
        problem = window.check_settings()
        assert problem.startswith("Techniques: a compress run needs")
        assert "[techniques." not in problem and "“Int8 dynamic quantization”" in problem
        box = window.techniques.rows["quantize_int8_dynamic"].enable
        window.settings_scroll.ensureWidgetVisible(box)
        QApplication.processEvents()
        qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=indicator_centre(box))
        assert window.check_settings() == ""
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)
    stored = RunConfig.from_toml(RunStore().open_run(window.run_id).config_text())
    assert stored.workload == workload and stored.infer.batch_size == 16
    window.set_config(stored)  # and back: the form shows the inference batch
    assert form.batch_size.value() == 16


def test_wheel_over_a_field_scrolls_the_panel_and_changes_nothing(qtbot, window):
    window.resize(1024, 700)
    qtbot.wait(50)
    bar = window.settings_scroll.verticalScrollBar()
    assert bar.maximum() > 0  # the panel is taller than the window: it scrolls
    form = window.form
    steps, size = form.steps.value(), form.model_size.currentData()
    window.settings_scroll.ensureWidgetVisible(form.steps)
    top = bar.value()
    for _ in range(3):
        wheel(form.steps, -1)
    assert form.steps.value() == steps
    assert bar.value() > top  # the panel moved instead
    bar.setValue(0)
    wheel(form.model_size, -1)
    assert form.model_size.currentData() == size
    spin = window.techniques.rows["grad_clip"].controls["max_norm"].widget
    window.techniques.rows["grad_clip"].enable.setChecked(True)
    value = spin.value()
    wheel(spin, -2)
    assert spin.value() == value


def test_typed_out_of_range_values_are_kept_and_refused_in_the_words_on_screen(qtbot, window):
    form = window.form
    form.device.setCurrentText("cpu")
    techniques_box = window.techniques.parentWidget()
    top_before = techniques_box.mapTo(window, QPoint(0, 0)).y()
    type_into(form.batch_size, "0")
    assert form.batch_size.value() == 0  # kept, not silently made 1
    problem = window.check_settings()
    assert problem.startswith("Batch size: must be 1 or more")
    assert "train.batch_size" not in window.run_controls.validation.text()
    assert "Batch size" in window.run_controls.validation.text()
    # The sentence did not push the panel down under the mouse.
    assert techniques_box.mapTo(window, QPoint(0, 0)).y() == top_before
    type_into(form.batch_size, "4")
    type_into(form.learning_rate, "1000")
    assert form.learning_rate.value() == pytest.approx(1000.0)
    assert window.check_settings().startswith("Learning rate:")
    type_into(form.learning_rate, "0.001")
    row = window.techniques.rows["grad_accumulation"]
    row.enable.setChecked(True)
    spin = row.controls["micro_batches"].widget
    type_into(spin, "100000")
    assert spin.value() == 100000
    problem = window.check_settings()
    assert problem.startswith("Gradient accumulation › micro batches: must be at most 1024, "
                              "got 100000"), problem
    assert "techniques." not in window.run_controls.validation.text()
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    assert window.run_id is None  # refused, in the panel's words
    assert "micro" in window.error_text() and "techniques." not in window.error_text()
