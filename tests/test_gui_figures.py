"""Every figure of a run readable in full, with its percentiles in columns, and a compress run as
a table of original, compressed and ratio with its verdict, its quality sentence and neutral
deltas, and its latency curves (real stored summaries from tests/data)."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt

from profiler.store import RunStore
from tests.gui_support import (
    DATA,
    click_run,
    open_tab,
    stored_run,
    train_messages,
)


def real_summary(name: str) -> dict:
    """A summary.json the real worker wrote (effiscope run on nano, CPU), machine details cut."""
    import json

    return json.loads((DATA / f"{name}_summary.json").read_text(encoding="utf-8"))


def cut_cells(table, scroll) -> list[str]:
    """Texts of the table that are not shown whole: wider than their column, or beyond the right
    edge of the scroll area the table sits in."""

    out = []
    metrics = table.fontMetrics()
    right = table.mapTo(scroll.viewport(), QPoint(table.viewport().width(), 0)).x()
    for column in range(table.columnCount()):
        if table.isColumnHidden(column):
            continue
        edge = table.columnViewportPosition(column) + table.columnWidth(column)
        for row in range(table.rowCount()):
            item = table.item(row, column)
            lines = item.text().split("\n") if item is not None else []
            widest = max((metrics.horizontalAdvance(line) for line in lines), default=0)
            if widest + 6 > table.columnWidth(column) or (
                    lines and table.mapTo(scroll.viewport(), QPoint(edge, 0)).x() > right + 1):
                out.append(item.text())
    return out


def test_every_figure_is_readable_with_percentiles_in_columns(qtbot, window):
    from profiler.store import RunStore

    store = RunStore()
    infer = stored_run(store, "nano infer", train_messages(3, summary=real_summary("infer")))
    train = stored_run(store, "nano train", train_messages(3, summary=real_summary("train")))
    window.history.refresh()
    view = window.summary_view
    click_run(qtbot, window.history, infer)
    open_tab(qtbot, window, view)
    qtbot.wait(50)
    labels = view.labels()
    assert labels.count("Decode latency per token") == 1  # one row, not three cut ones
    row = view.row_text("Decode latency per token")
    assert (row["value"], row["p90"], row["p99"]) == ("634 µs", "816 µs", "4.81 ms")
    assert row["spread"].startswith("±")
    assert not cut_cells(view.table, view)
    click_run(qtbot, window.history, train)
    qtbot.wait(50)
    assert view.row_text("Step time")["p99"] == "115 ms"
    assert view.row_text("Throughput")["spread"] == "±6.3 %, n=37"
    assert not cut_cells(view.table, view)
    # the answer first: the headline above the tabs, each card in full
    texts = window.headline.texts()
    assert texts[0] == "Throughput: 5,840 tokens/s (±6.3 %, n=37)"
    for label, value, spread in window.headline.cards:
        for widget in (label, value, spread):
            if widget.isVisible():  # whole: on its line, or (a label) on the lines it wraps to
                assert widget.fontMetrics().horizontalAdvance(widget.text()) <= widget.width() \
                    or (widget.wordWrap() and widget.heightForWidth(widget.width())
                        <= widget.height())


def test_compress_shows_original_compressed_and_ratio_with_its_verdict(qtbot, window):
    from profiler.store import RunStore

    run_id = stored_run(RunStore(), "nano int8", train_messages(
        3, summary=real_summary("compress")))
    window.history.refresh()
    click_run(qtbot, window.history, run_id)
    view = window.summary_view
    open_tab(qtbot, window, view)
    qtbot.wait(50)
    table = view.compress
    assert table.isVisible()
    assert table.row("Decode throughput") == ("Decode throughput", "1,470 tokens/s",
                                              "1,200 tokens/s", "0.818x (0.799-0.830)\nworse")
    assert table.row("Prefill latency p50")[3].endswith("\nbetter")
    assert table.row("Weights in memory")[1:3] == ("3.28 MiB", "1.10 MiB")
    # the quality cost in one sentence, not a paragraph in a banner
    cost = table.cost.text()
    assert cost.count(". ") == 0 and "Perplexity went from 227.593 to 227.575" in cost
    assert "KL(" not in window.notice_text()  # the 9-line paragraph is gone from the banner
    assert not cut_cells(table.table, view)
    # the original model's figures are in the table, not repeated below it
    assert not any(label.endswith("(original)") for label in view.labels())


def test_compress_latency_curves_one_colour_per_measure_one_style_per_model(qtbot, window):
    from profiler.store import RunStore

    keys = ("prefill_latency_s", "ttft_s", "decode_latency_s")
    messages = train_messages(0)
    for step in range(1, 6):
        metrics = {f"{model}_{key}": 0.001 * (index + 1) * (1.2 if model == "baseline" else 1)
                   for index, key in enumerate(keys) for model in ("baseline", "compressed")}
        messages.append({"type": "sample", "step": step, "time": step * 0.1, "phase": "measure",
                         "metrics": metrics})
    run_id = stored_run(RunStore(), "int8", messages)
    window.history.refresh()
    click_run(qtbot, window.history, run_id)
    window.charts.redraw_now()
    def pen(key):
        return window.charts.curves[key].opts["pen"]

    colors = {key: pen(f"compressed_{key}").color().name() for key in keys}
    assert len(set(colors.values())) == 3  # the three measures are told apart by colour
    for key in keys:
        assert pen(f"baseline_{key}").color().name() == colors[key]  # same measure, same colour
        assert pen(f"baseline_{key}").style() == Qt.PenStyle.DashLine  # original: dashed
        assert pen(f"compressed_{key}").style() == Qt.PenStyle.SolidLine
    legend = window.charts.legend_text("latency")
    assert "┅ Time to first token (original)" in legend
    assert "━ Time to first token (compressed)" in legend


def test_compress_quality_sentence_and_neutral_deltas(qtbot, window):
    store = RunStore()
    sentence = "Perplexity rose 0.6 % (21.3 -> 21.4) after pruning 30 % of the weights."
    base = stored_run(store, "base", train_messages(3, summary={"figures": {
        "tokens_per_s": {"value": 1000.0, "unit": "tokens/s", "how": "x"}}}))
    noisy = stored_run(store, "noisy", train_messages(3, summary={
        "quality_loss": sentence, "figures": {
            "tokens_per_s": {"value": 1100.0, "unit": "tokens/s", "how": "x"}}}))
    window.history.refresh()
    window.show_stored_run(noisy)
    assert sentence in window.notice_text()
    window.set_compared([base, noisy])
    window.compare.set_baseline(base)
    assert window.compare.wait()
    table = window.compare.table
    cell = next(table.item(r, 3) for r in range(table.rowCount())
                if table.item(r, 0).text().startswith("Throughput"))
    assert cell.text() == "+10.0 % (not comparable)"
    assert cell.data(Qt.ItemDataRole.UserRole) == "not comparable"  # a bare number: no verdict
    assert "too few measured steps" in cell.toolTip()  # the reason, said
    assert cell.foreground().color().name() not in ("#15803d", "#b91c1c")
