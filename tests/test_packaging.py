"""unfork installed from its wheel without extras: every command works or names the extra it needs."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from unfork.extras import OPTIONAL, missing_extra

REPO = Path(__file__).resolve().parents[1]


def test_every_optional_module_maps_to_a_declared_extra():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for module, (package, extra) in OPTIONAL.items():
        assert extra in extras, f"{module}: extra '{extra}' is not declared"
        names = [r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip() for r in extras[extra]]
        assert package in names, f"{module}: extra '{extra}' does not bring {package}"
    assert "all" in extras


def test_missing_extra_names_the_extra_and_ignores_others():
    err = missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch"), "'unfork model train'")
    assert err is not None and "unfork[train]" in err.hint and "'torch'" in err.message
    assert missing_extra(ModuleNotFoundError("x", name="torch.nn"), "x") is not None
    assert missing_extra(ModuleNotFoundError("x", name="nosuchthing"), "x") is None


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level names imported by a module: at module level, and inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top, inner = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        (top if node.col_offset == 0 else inner).update(n.split(".")[0] for n in names)
    return top, inner


def test_imported_modules_are_declared():
    """A core module imports only core dependencies at its top; anything else maps to an extra."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {d.split(">")[0].split("=")[0].strip().lower() for d in deps}
    core = {"click", "yaml", "httpx", "rich", "prompt_toolkit", "jinja2"}
    assert {"click", "pyyaml", "httpx", "rich", "prompt_toolkit", "jinja2"} <= declared
    known = set(sys.stdlib_module_names) | core | {"unfork", "__future__"}
    # modules that only torch-backed code imports, and optional packages the code probes for
    heavy = {"unfork/train/", "unfork/serve/hf_app.py"}
    probed = {"tokenizers", "tensorboard", "wandb", "anyio", "model_signing", "pytest"}
    problems = []
    for path in sorted((REPO / "src" / "unfork").rglob("*.py")):
        rel = path.relative_to(REPO / "src").as_posix()
        top, inner = _imports(path)
        allowed_top = known | (set(OPTIONAL) if any(rel.startswith(h) for h in heavy) else set())
        problems += [f"{rel}: imports {n} at module level" for n in sorted(top - allowed_top)]
        problems += [f"{rel}: imports {n}, which no extra declares" for n in sorted(inner - known - set(OPTIONAL) - probed)]
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_wheel_without_extras_names_the_extra(tmp_path):
    """Build the wheel, install it bare into a fresh venv, and run the commands that need extras."""
    wheel_dir = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir), str(REPO)], check=True, timeout=300)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    wheel = next(wheel_dir.glob("unfork-*.whl"))
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=600)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train_all.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n")
    env = {**os.environ, "UNFORK_HOME": str(tmp_path / "home")}
    unfork = str(venv / "bin" / "unfork")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([unfork, *args], capture_output=True, text=True, env=env, timeout=120)

    for args in (["--help"], ["system", "info"], ["config", "show"], ["taxonomy", "validate", "--help"]):
        res = run(*args)
        assert res.returncode == 0, (args, res.stderr)
    res = run("model", "train", "--data-path", str(data), "--output-dir", str(tmp_path / "run"))
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and "pip install 'unfork[train]'" in res.stderr, res.stderr
