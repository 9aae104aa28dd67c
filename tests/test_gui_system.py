"""The System panel: the run and the machine it ran on, and every GPU NVML reads (a fake NVML)."""

from __future__ import annotations

from tests.gui_support import click, fake_worker, open_tab


def test_the_system_panel_shows_the_run_and_the_machine(qtbot, window):
    import psutil

    before = window.headline.height()
    window.worker_command = fake_worker(0.03)
    window.form.steps.setValue(100_000)
    click(qtbot, window.run_button)
    qtbot.waitUntil(lambda: window.link is not None and window.link.recorder.samples >= 5,
                    timeout=30_000)
    panel = window.system
    open_tab(qtbot, window, panel)
    qtbot.waitUntil(lambda: panel.values()["rss_bytes"].endswith("MiB"), timeout=5000)
    values = panel.values()
    assert values["cpu_percent"] == "95.0 %"
    assert values["gpu_util_percent"] == "n/a" and values["gpu_power_w"] == "n/a"  # a CPU run
    assert len(panel.meters["rss_bytes"].history) >= 5  # its recent history, drawn
    assert len(panel.core_bars) == (psutil.cpu_count() or 1)  # every core of this machine
    qtbot.waitUntil(lambda: "of RAM in use" in panel.machine_note.text(), timeout=3000)
    assert "no NVIDIA GPU readings" in panel.machine_note.text() or panel.gpus
    assert window.headline.height() == before  # the live figures took the reserved room
    click(qtbot, window.stop_button)
    qtbot.waitUntil(lambda: not window.running, timeout=30_000)


def test_the_system_panel_reads_every_gpu(qtbot, window, monkeypatch):
    from tests.fake_nvml import FakeGpu, FakeNvml, install

    class WithClocks(FakeNvml):
        NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

        def nvmlDeviceGetClockInfo(self, handle, kind):  # noqa: N802 - pynvml's name
            self._note("clock", handle)
            return 1980 if kind == self.NVML_CLOCK_SM else 2619

    install(monkeypatch, WithClocks([
        FakeGpu("GPU-aaaa", memory_used=10 * 2**30, util=97),
        FakeGpu("GPU-bbbb", name="NVIDIA A100-SXM4-40GB", memory_total=40 * 2**30,
                power_mw=None, util=0)]))
    panel = window.system
    open_tab(qtbot, window, panel)
    panel.read_machine()
    texts = [label.text() for label in panel.gpu_labels]
    assert len(texts) == 2
    assert "GPU 0: NVIDIA H100 80GB HBM3" in texts[0] and "utilization 97" in texts[0]
    assert "memory 10.0 GiB of 80.0 GiB" in texts[0] and "power 300 W" in texts[0]
    assert "clocks SM 1,980 MHz / memory 2,619 MHz" in texts[0]
    assert "power n/a" in texts[1]  # a query the card refuses reads n/a, never raises
