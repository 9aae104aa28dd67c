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


TORCH_FREE = ("profiler.wire", "profiler.store", "profiler.figures", "profiler.config")
"""The folders that hold no torch (docs/architecture.md): what the app, the CLI's light commands
and reports import. Beside them the leaves (errors, files, text), the system sampler and the
model facts a config names."""
LIGHT = ("profiler", "profiler.errors", "profiler.files", "profiler.text",
         "profiler.measure.system", "profiler.measure.contention", "profiler.models.presets",
         "profiler.models.source")


def test_the_torch_free_folders_import_with_torch_blocked():
    """Every module of the torch-free folders imports in a process where importing torch (or
    transformers, torchao, peft) raises: a lazy import inside a function is fine, one at import
    time fails here, whatever import-linter's static contract sees."""
    modules = [m for package in TORCH_FREE for m in _modules(package.replace(".", "/"))]
    modules = [m.replace("/", ".") for m in modules] + list(LIGHT)
    assert len(modules) > 30  # every module of the four folders
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'transformers', 'torchao', 'peft'):\n"
            "            raise ImportError(f'{name} is blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            f"for name in {modules!r}:\n"
            "    __import__(name)\n"
            "print(len(sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
