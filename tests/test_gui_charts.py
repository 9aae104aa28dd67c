"""The charts on their own: decimation that keeps every peak, smoothing, the x axis by time,
charts that appear only with data, compared runs, and the GUI benchmark in miniature."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.charts import LiveCharts
from app.series import SeriesBuffer, smoothed


def sample(step: int, **metrics) -> dict:
    return {"type": "sample", "step": step, "time": step * 0.5, "phase": "measure",
            "metrics": metrics}


def test_series_appends_and_extends_alike_and_decimation_keeps_peaks():
    rng = np.random.default_rng(1)
    values = rng.random(100_000)
    values[54_321] = 9.0  # one spike among 100,000 readings
    values[777] = math.nan
    steps = np.arange(len(values), dtype=float)
    one, bulk = SeriesBuffer(), SeriesBuffer()
    for s, v in zip(steps[:5000], values[:5000], strict=True):
        one.append(s, s * 0.1, v)
    bulk.extend(steps[:5000], steps[:5000] * 0.1, values[:5000])
    assert np.array_equal(one.view(False, None, 300)[1], bulk.view(False, None, 300)[1],
                          equal_nan=True)
    bulk.extend(steps[5000:], steps[5000:] * 0.1, values[5000:])
    x, y = bulk.view(False, None, 500)
    assert len(x) <= 4 * 500  # O(pixels), not O(points)
    assert np.nanmax(y) == 9.0 and np.nanmin(y) == np.nanmin(values)
    x, y = bulk.view(False, (54_000.0, 54_600.0), 500)  # zoomed in: raw readings
    assert 600 <= len(x) <= 610 and 9.0 in y
    assert bulk.low == np.nanmin(values) and bulk.high == 9.0
    assert bulk.x_at_step(1000) == pytest.approx(100.0)


def test_smoothing_is_a_debiased_moving_average_with_gaps():
    out = smoothed(np.array([1.0, math.nan, 3.0]), 0.5)
    assert out[0] == 1.0 and math.isnan(out[1])
    assert out[2] == pytest.approx((0.5 * 0.5 * 1.0 + 0.5 * 3.0) / (1 - 0.25))
    assert np.array_equal(smoothed(np.array([2.0, 4.0]), 0.0), [2.0, 4.0])


def test_charts_follow_the_data(qtbot):
    charts = LiveCharts()
    qtbot.addWidget(charts)
    charts.resize(900, 700)
    charts.show()
    charts.redraw_now()
    assert set(charts.shown_charts()) == {"loss", "speed", "step_time", "memory"}  # empty: core
    charts.add_samples([sample(s, loss_train=4.0 / s, tokens_per_s=1e3, step_time_s=0.1,
                               rss_bytes=2**29, gpu_util_percent=None) for s in range(1, 51)])
    charts.redraw_now()
    assert "gpu_util" not in charts.shown_charts()  # no GPU reading: no GPU chart
    charts.add_samples([sample(51, gpu_util_percent=97.0, ttft_s=0.012)])
    charts.redraw_now()
    assert {"gpu_util", "latency"} <= set(charts.shown_charts())
    assert charts.curves["ttft_s"].yData[-1] == pytest.approx(12.0)  # drawn in ms

    charts.add_marker(20, "precision: bf16")
    charts.set_smoothing(0.9)
    charts.redraw_now()
    raw = charts._series["loss_train"]
    assert raw.shadow.isVisible()  # the raw curve, faint, behind the smoothed line
    assert raw.shadow.opts["pen"].color().alpha() < 255
    assert len(raw.shadow.yData) == len(charts.curves["loss_train"].yData) == 50
    assert charts.curves["loss_train"].yData[-1] > 4.0 / 50  # the EMA lags the falling loss
    assert charts._series["tokens_per_s"].shadow.isVisible()  # every chart is smoothed
    charts.set_x_axis("time")
    charts.redraw_now()
    assert charts.markers[0][1].value() == pytest.approx(10.0)  # step 20 is at 10 s
    assert charts.curves["loss_train"].xData[-1] == pytest.approx(25.0)
    assert charts.plots["loss"].getPlotItem().getAxis("bottom").labelText == "time (s)"

    charts.set_overlay("other", "other run", [sample(s, loss_train=3.0, tokens_per_s=2e3)
                                              for s in range(1, 11)])
    charts.redraw_now()
    assert charts.overlay_ids() == ["other"] and charts.clear_overlays_button.isVisible()
    assert len(charts.overlay_curve("other", "tokens_per_s").xData) == 10
    charts.clear()
    assert charts.overlay_ids() == ["other"]  # clearing the live run keeps the comparison
    charts.clear_overlays()
    assert not charts.overlay_ids()


def test_200k_points_per_curve_draw_only_what_the_pixels_need(qtbot):
    charts = LiveCharts()
    qtbot.addWidget(charts)
    charts.resize(1000, 800)
    charts.show()
    n = 200_000
    steps = np.arange(1, n + 1, dtype=float)
    for key in ("loss_train", "tokens_per_s", "step_time_s", "rss_bytes"):
        charts.fill(key, steps, steps * 0.01, np.sin(steps / 1e4) + 2)
    charts.redraw_now()
    for step in range(n + 1, n + 21):
        charts.add_samples([sample(step, loss_train=2.0, tokens_per_s=2.0, step_time_s=2.0,
                                   rss_bytes=2.0)])
        charts.redraw_now()
    # Timings belong in `effiscope bench gui`; here: every reading kept, O(pixels) drawn.
    assert charts.point_count("loss_train") == n + 20
    assert charts.drawn_count("loss_train") <= 2 * charts.plots["loss"].width() + 4  # a pair
    # of points per pixel column at most (its min and max): every spike, nothing more
    for plot in charts.plots.values():  # every chart shows up to the newest step
        assert plot.getPlotItem().getViewBox().viewRange()[0][1] >= n + 20


def test_bench_gui_in_miniature():
    from app.bench_gui import measure

    result = measure(points=20_000, rate=100, seconds=1.5)
    assert result["samples_received"] >= 100
    assert result["points_after"] >= 20_100
    assert result["charts"] == 8
    assert result["redraw_turns_per_s"] > 1
    assert len(result["chart_hz"]) == 8  # every chart has its own rate
    assert result["slowest_chart_hz"] == min(result["chart_hz"].values())
