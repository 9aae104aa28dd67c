"""What the window says while and after a run: a worker killed from outside says what to check,
the progress bar says which phase it counts, no stale or wrong words (nor a stale speed after a
stop), a warm worker waits for Run and leaves nothing behind, and a distillation's teacher from
a past run (a random teacher warns)."""

from __future__ import annotations

from PySide6.QtCore import Qt

from app.main import MainWindow
from profiler.config import RunConfig
from profiler.store import RunStore
from tests import gui_support
from tests.gui_support import (
    choose,
    click,
    dispose,
    fake_worker,
    stored_run,
    train_messages,
    type_into,
)


def test_a_worker_killed_from_outside_says_what_to_check(qtbot, window):
    import os
    import signal

    window.worker_command = fake_worker(0.05)
    window.form.steps.setValue(2000)
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.link is not None and window.link.recorder.samples >= 3,
                    timeout=30_000)
    os.kill(window.link.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: not window.running, timeout=10_000)
    text = window.error_text()
    assert "The run was killed" in text and "SIGKILL" in text
    assert "Out of memory" in text and "another process" in text  # what the user can check
    assert "its last reading was 10" in text  # the fake's RSS: 100-106 MiB
    assert "samples received before are kept" in text
    # the status line is not cut: a few words there, the rest in the banner and the left column
    status = window.statusBar()
    message = status.currentMessage()
    assert message == "The run was killed"
    assert status.fontMetrics().horizontalAdvance(message) < status.width() // 2
    eta = window.run_controls.eta_label
    assert eta.text().startswith("killed: the worker was killed (exit code -9)")
    assert eta.height() >= eta.heightForWidth(eta.width())  # every line of it in view


def test_distill_teacher_from_a_past_run_and_a_random_teacher_warns(qtbot, window):
    from profiler.store import RunStore

    store = RunStore()
    trained = stored_run(store, "trained teacher", train_messages(3))
    (store.runs_dir / trained / "model.safetensors").write_bytes(b"weights")  # saved weights
    window.form.steps.setValue(6)
    choose(qtbot, window.form.workload, "distill")
    form = window.form
    # a preset teacher and 0 teacher steps: random weights, said under the field
    choose(qtbot, form.teacher, "preset:gpt-mini")
    form.teacher_steps.setValue(0)
    assert form.teacher_note.isVisible() and "random weights" in form.teacher_note.text()
    form.teacher_steps.setValue(4)
    assert not form.teacher_note.isVisible()
    # a past run's weights as the teacher: listed, chosen, in the config
    choose(qtbot, form.teacher, f"run:{trained}")
    form.teacher_steps.setValue(0)
    assert not form.teacher_note.isVisible()  # trained weights teach something
    teacher = window.build_config().distill.teacher
    assert (teacher.source, teacher.run_id) == ("run", trained)
    window.set_config(window.build_config())  # and back into the form
    assert form.teacher.currentData() == f"run:{trained}"


def test_a_train_run_can_continue_from_a_past_runs_weights(qtbot, window):
    from profiler.store import RunStore

    store = RunStore()
    trained = stored_run(store, "pretrained", train_messages(3))
    (store.runs_dir / trained / "model.safetensors").write_bytes(b"weights")  # saved weights
    form = window.form
    assert form.workload.currentData() == "train"
    choose(qtbot, form.model_source, "run")
    assert form.model_run.isVisible()
    choose(qtbot, form.model_run, trained)
    model = window.build_config().model
    assert (model.source, model.run_id) == ("run", trained)
    for workload in ("infer", "distill", "train"):  # kept across workloads, train included
        choose(qtbot, form.workload, workload)
        assert form.model_source.currentData() == "run"


def test_the_progress_bar_says_which_phase_it_counts(qtbot, window):
    window.worker_command = fake_worker(0.03)
    window.form.steps.setValue(6)
    choose(qtbot, window.form.workload, "distill")
    window.form.teacher_steps.setValue(4)
    formats = []
    bar = window.run_controls.progress
    bar.valueChanged.connect(lambda _v: formats.append(bar.format()))
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.run_id is not None and not window.running, timeout=30_000)
    assert "teacher step 2 / 4" in formats and "teacher step 4 / 4" in formats
    assert "student step 6 / 6" in formats
    assert formats.index("teacher step 4 / 4") < formats.index("student step 1 / 6")


def test_stale_and_wrong_words_are_gone(qtbot, window, tmp_path):
    form = window.form
    form.model_size.setCurrentIndex(form.model_size.findData("gpt-mini"))
    from profiler.models.presets import GPT_PRESETS

    assert GPT_PRESETS["gpt-mini"].description in form.model_note.text()
    # No momentum for AdamW; there for SGD.
    optimizer = window.techniques.rows["optimizer"]
    assert "momentum" not in optimizer.shown_params()
    optimizer.controls["algorithm"].widget.setCurrentText("sgd")
    assert "momentum" in optimizer.shown_params()
    optimizer.controls["algorithm"].widget.setCurrentText("adamw")
    # No green "Fits" for a model that cannot run.
    type_into(form.seq_len, "100000")
    window.check_settings()
    assert not window.estimate.fit.text().startswith("Fits")
    type_into(form.seq_len, "64")

    store = RunStore()
    figures = {"perplexity_change_percent": {"value": 0.6, "unit": "%", "how": "x"}}
    done = stored_run(store, "compressed", train_messages(3, summary={"figures": figures}))
    killed = stored_run(store, "killed one", train_messages(7), exit_code=-9, killed=True)
    window.history.refresh()
    window.history.select(done)
    values = [row["value"] for row in window.summary_view.rows]
    assert "0.600 %" in values  # as the report says it (one formatter), never a rounded "1 %"
    window.history.select(killed)
    labels = window.summary_view.labels()
    assert "Last step reached" in labels and any("(last)" in label for label in labels)

    plain = RunConfig(name="plain", device="cpu")
    tf32 = RunConfig(name="tf32", device="cpu")
    tf32.techniques = {"tf32": {}}
    a = stored_run(store, "plain", train_messages(2), config=plain)
    b = stored_run(store, "tf32", train_messages(2), config=tf32)
    window.history.refresh()
    window.set_compared([a, b])
    assert window.compare.wait()
    keys = [window.compare.diff_keys.item(r, 0).text()
            for r in range(window.compare.diff_keys.rowCount())]
    assert "techniques" not in keys and "techniques.tf32" in keys


def test_no_stale_speed_after_stop(qtbot, window):
    window.worker_command = fake_worker(0.05)
    window.form.device.setCurrentText("cpu")
    window.form.steps.setValue(2000)
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "tokens/s" in window.speed_label.text(), timeout=30_000)
    qtbot.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)
    assert window.speed_label.text() == ""


def test_a_warm_worker_waits_for_run_and_nothing_is_left_behind(qtbot, effiscope_home):
    win = MainWindow(warm_worker=True)
    win.warm_command = gui_support.warm_fake_worker()
    try:
        win.show()
        win.start_warm_worker()
        warm = win.warm
        qtbot.waitUntil(lambda: warm.ready, timeout=30_000)  # hello sent, waiting for start
        pid = warm.pid
        win.form.steps.setValue(5)  # settings change: the waiting worker stays as it is
        win.techniques.rows["grad_clip"].enable.setChecked(True)
        win.check_settings()
        assert win.warm is warm and warm.pid == pid
        win.form.device.setCurrentText("cpu")
        qtbot.mouseClick(win.run_button, Qt.MouseButton.LeftButton)
        assert win.link.pid == pid  # the run went to the worker that was already up
        qtbot.waitUntil(lambda: not win.running, timeout=30_000)
        run = RunStore().open_run(win.run_id)
        kinds = [m.get("type") for m in run.messages()]
        assert kinds[0] == "hello" and kinds.count("sample") == 5 and kinds[-1] == "done"
        assert run.meta()["status"] == "completed"
        qtbot.waitUntil(lambda: win.warm is not None and win.warm.alive, timeout=10_000)
        assert win.warm.pid != pid  # a fresh one for the next run
    finally:
        dispose(win)  # closing kills the waiting worker: conftest fails a leftover process
    assert not list((effiscope_home / "warm-workers").glob("*.log"))
