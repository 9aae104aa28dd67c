"""Many Qt signal emissions must not corrupt the interpreter.

PySide6 6.12.0 dropped a reference to True (and to None) on each emit of a bool / object signal,
until Python aborted with "deallocating True". The check runs in a child interpreter so that an
abort fails this test (a non-zero return code) instead of killing the test runner.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

EMITS = 20_000

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import pyqtgraph as pg
    from PySide6.QtCore import QObject, Signal
    from PySide6.QtWidgets import QApplication

    N = int(sys.argv[1])
    app = QApplication([])

    class Source(QObject):
        flag = Signal(bool)
        thing = Signal(object)

    counts = {"flag": 0, "true": 0, "thing": 0, "none": 0}

    def on_flag(value):
        counts["flag"] += 1
        counts["true"] += value is True

    def on_thing(value):
        counts["thing"] += 1
        counts["none"] += value is None

    source = Source()
    source.flag.connect(on_flag)
    source.thing.connect(on_thing)
    true_refs, none_refs = sys.getrefcount(True), sys.getrefcount(None)
    for _ in range(N):
        source.flag.emit(True)
        source.thing.emit(None)
    plot = pg.PlotWidget()
    curve = plot.plot()
    curve.setDownsampling(auto=True, method="peak")
    curve.setClipToView(True)
    x = np.arange(2000, dtype=float)
    for i in range(500):
        curve.setData(x, np.sin(x / 50 + i), connect="finite")
    app.processEvents()
    counts["set_data_points"] = len(curve.xData)
    # Immortal objects (Python >= 3.12) report a constant; earlier, a leak shows as a big drop.
    counts["true_ref_drop"] = true_refs - sys.getrefcount(True)
    counts["none_ref_drop"] = none_refs - sys.getrefcount(None)
    print(json.dumps(counts))
""")


def test_many_signal_emits_keep_the_interpreter_alive(tmp_path):
    script = tmp_path / "emit_many.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, str(script), str(EMITS)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, (
        f"the interpreter died (return code {out.returncode}; -6 is SIGABRT, the PySide6 6.12.0 "
        f"refcount bug): {out.stderr[-2000:]}")
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["flag"] == counts["true"] == EMITS
    assert counts["thing"] == counts["none"] == EMITS
    assert counts["set_data_points"] == 2000
    assert counts["true_ref_drop"] < EMITS // 2
    assert counts["none_ref_drop"] < EMITS // 2
