"""The estimate panel for a Hugging Face model: the memory trace runs in a child process
(`effiscope estimate --json`; the app never imports torch), said as tracing while it runs, and
its parts, peak and fit replace the torch-free weights-only figure; and the panel's place: in
view without scrolling."""

from __future__ import annotations

from PySide6.QtCore import QPoint

from app.estimate_panel import EstimatePanel
from tests.gui_support import click, global_rect
from tests.hf_fixtures import hf_config


def test_an_hf_model_gets_a_traced_estimate(qtbot):
    panel = EstimatePanel()
    qtbot.addWidget(panel)
    config = hf_config("llama")
    panel.update_for(config, {"gpus": []})
    assert "Tracing the model" in panel.fit.text()
    assert panel.result["fits"] is None  # no verdict before the trace has answered
    qtbot.waitUntil(lambda: panel.result.get("traced", False), timeout=180_000)
    parts = panel.result["parts"]
    assert parts["activations"] > 0 and parts["weights"] > 0
    assert panel.result["total"] >= sum(parts.values())  # the peak: the parts shown and inputs
    assert panel.result["fits"] is True and "Fits" in panel.fit.text()
    assert "peak during the" in panel.note.text() and "margin band" in panel.note.text()
    assert panel.value_labels["activations"].text() not in ("", "–")
    # the same question again is answered from the panel's memory, with no new child
    panel.update_for(config, {"gpus": []})
    assert panel.result.get("traced") and not panel.job.running


def test_a_trace_that_cannot_run_says_why(qtbot):
    panel = EstimatePanel()
    qtbot.addWidget(panel)
    config = hf_config("llama", techniques={"qlora": {}})
    panel.update_for(config, {"gpus": []})
    key = panel.pending[0]
    panel.debounce.stop()  # answered here instead of by a child
    panel._answered(key, None, "techniques.qlora cannot be traced under fake tensors")
    assert panel.result["fits"] is None
    assert "No memory trace: techniques.qlora cannot be traced" in panel.fit.text()


def test_the_estimate_is_in_view_without_scrolling(qtbot, window):
    line = window.run_controls.validation
    assert line.text().startswith("Estimate: Fits") and line.isVisible()
    assert window.rect().contains(global_rect(line).translated(-window.mapToGlobal(
        QPoint(0, 0))))
    box = window.estimate_box
    scroll = window.settings_scroll
    assert not scroll.viewport().rect().intersects(
        box.geometry().translated(0, -scroll.verticalScrollBar().value()))
    # its button shows the breakdown
    click(qtbot, window.run_controls.breakdown_button)
    qtbot.waitUntil(lambda: scroll.viewport().rect().intersects(
        box.geometry().translated(0, -scroll.verticalScrollBar().value())), timeout=3000)


