"""The layout of DESIGN.md: app never imports torch; profiler and techniques never import Qt."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _modules(package: str) -> list[str]:
    path = ROOT / package
    names = [package]
    for info in pkgutil.walk_packages([str(path)], prefix=f"{package}."):
        names.append(info.name)
    return names


def _imported_after(modules: list[str]) -> set[str]:
    code = ("import sys, json\n"
            f"for name in {modules!r}:\n"
            "    __import__(name)\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    import json

    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_app_never_imports_torch():
    loaded = _imported_after(_modules("app"))
    assert "torch" not in loaded
    assert "PySide6" in loaded  # the check would be vacuous if app imported nothing


@pytest.mark.parametrize("package", ["profiler", "techniques"])
def test_profiler_and_techniques_never_import_qt(package):
    loaded = _imported_after(_modules(package))
    assert not {m for m in loaded if m.split(".")[0] in ("PySide6", "pyqtgraph", "shiboken6")}
    if package == "profiler":
        assert "torch" in loaded  # the worker and workloads were really imported


def test_technique_metadata_imports_without_torch():
    code = ("import sys\n"
            "from techniques import registry\n"
            "infos = registry.all_techniques()\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print(len(infos))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_light_profiler_modules_do_not_import_torch():
    light = ["profiler", "profiler.wire.protocol", "profiler.config", "profiler.store",
             "profiler.wire.recorder", "profiler.wire.client", "profiler.figures.metrics", "profiler.measure.system",
             "profiler.figures.theory", "profiler.models.presets"]
    assert "torch" not in _imported_after(light)
