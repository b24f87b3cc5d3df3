"""Layers import downward only and no package has import cycles: ``lint-imports`` with the contracts in
pyproject.toml, on the code as it is and on copies that break a contract."""

from __future__ import annotations

import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import library

REPO_ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONFIG = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the packages under ``root`` with ``root``'s pyproject.toml."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.slow
def test_the_code_keeps_every_contract():
    result = lint_imports(REPO_ROOT)
    contracts = len(CONFIG["tool"]["importlinter"]["contracts"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {contracts} kept, 0 broken." in result.stdout


def _copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """The packages and pyproject.toml copied to ``tmp_path``, with ``line`` appended to ``module``'s file."""
    for package in CONFIG["tool"]["importlinter"]["root_packages"]:
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    path = tmp_path / Path(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "line", "broken", "reported"),
    [
        ("library.data.summary", "from library.training import run_files", "packages import downward only",
         "library.data.summary -> library.training.run_files"),
        ("library.sampling.grid", "import library.networks.merge", "packages import downward only",
         "library.sampling.grid -> library.networks.merge"),
        ("preprocess.report", "from library.sampling import grid", "preprocess reads datasets, models and config only",
         "preprocess.report -> library.sampling.grid"),
        ("library.training.exceptions", "import library.training.trainer",
         "no import cycles among the modules of a package", ".exceptions -> .trainer"),
    ],
)
@pytest.mark.slow
def test_a_violating_import_breaks_a_contract(tmp_path, module, line, broken, reported):
    result = lint_imports(_copy_with(tmp_path, module, line))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{broken} BROKEN" in result.stdout
    assert reported in result.stdout


def _layered_modules() -> set[str]:
    (layers,) = [c["layers"] for c in CONFIG["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return {module.strip() for layer in layers for module in re.split(r"[|:]", layer)}


def test_every_package_has_a_layer():
    """A new package or top-level module must be placed in the layers, or nothing would check its imports."""
    top_level = {f"library.{info.name}" for info in pkgutil.iter_modules(library.__path__)}
    assert _layered_modules() == top_level | {"preprocess"}
    packaged = CONFIG["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(CONFIG["tool"]["importlinter"]["root_packages"]) == sorted(name.rstrip("*") for name in packaged)
