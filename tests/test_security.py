"""Nothing that crosses a process boundary is unpickled or evaluated: a scan of the source of
profiler/, app/ and techniques/ (by syntax tree, so comments and `model.eval()` do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("profiler", "app", "techniques")
PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal",
                    "joblib"}
# torch.distributed's *_object helpers pickle whatever they are handed.
PICKLING_NAMES = {"broadcast_object_list", "gather_object", "all_gather_object",
                  "scatter_object_list", "send_object_list", "recv_object_list", "read_pickle",
                  "unsafe_load"}


def _is_true(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def problems(source: str, name: str) -> list[str]:
    """Every unsafe deserialisation or evaluation in one module's source."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names
                      if a.name.split(".")[0] in PICKLING_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLING_MODULES:
            found.append(f"{where} imports from {node.module}")
        elif isinstance(node, (ast.Name, ast.Attribute)):
            ident = node.id if isinstance(node, ast.Name) else node.attr
            if ident in PICKLING_NAMES:
                found.append(f"{where} uses {ident}")
        if isinstance(node, ast.Call):
            func = node.func
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
                found.append(f"{where} calls {func.id}()")
            if (isinstance(func, ast.Attribute) and func.attr == "load"
                    and isinstance(func.value, ast.Name) and func.value.id == "torch"
                    and not _is_true(keywords.get("weights_only", ast.Constant(None)))):
                found.append(f"{where} calls torch.load without weights_only=True")
            for key in ("trust_remote_code", "allow_pickle"):
                if key in keywords and not (isinstance(keywords[key], ast.Constant)
                                            and keywords[key].value is False):
                    found.append(f"{where} passes {key} other than False")
            if "weights_only" in keywords and not _is_true(keywords["weights_only"]):
                found.append(f"{where} passes weights_only other than True")
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (isinstance(key, ast.Constant) and key.value in ("trust_remote_code",
                                                                    "allow_pickle")
                        and not (isinstance(value, ast.Constant) and value.value is False)):
                    found.append(f"{where} sets {key.value} other than False")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_pickle_eval_or_unsafe_load_in(package):
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        found += problems(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not found, "\n".join(found)


@pytest.mark.parametrize("snippet", [
    "import pickle",
    "from cloudpickle import loads",
    "x = eval(line)",
    "exec(code)",
    "torch.load(path)",
    "torch.load(path, weights_only=False)",
    "AutoModel.from_pretrained(p, trust_remote_code=True)",
    "kwargs = {'trust_remote_code': True}",
    "np.load(p, allow_pickle=True)",
    "dist.broadcast_object_list(objects, src=0)",
    "dist.gather_object(obj, out)",
])
def test_the_scan_finds_each_unsafe_form(snippet):
    assert problems(snippet, "snippet.py")


@pytest.mark.parametrize("snippet", [
    "model.eval()",
    "app.exec()",
    "torch.load(path, weights_only=True)",
    "AutoModel.from_pretrained(p, trust_remote_code=False)",
    "# never pickle: we eval( nothing",
    "text = 'import pickle'",
])
def test_the_scan_leaves_safe_code_alone(snippet):
    assert not problems(snippet, "snippet.py")
