"""What the window says while and after a run: a worker killed from outside says what to check,
the progress bar says which phase it counts, and a distillation's teacher from a past run (a
random teacher warns)."""

from __future__ import annotations

from tests.gui_support import choose, click, fake_worker, stored_run, train_messages


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
