"""The layering in ``pyproject.toml`` holds, and a broken layer would be caught.

``make lint`` runs the same contracts; running them here too means CI fails on the next
change that makes a lower layer import a higher one. import-linter runs in a subprocess:
in-process it replaces the standard streams, which breaks pytest's capture.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": str(LINT_IMPORTS.parent)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_contracts_are_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    """The contracts can fail: a copy of the package whose data layer imports the CLI."""
    package = tmp_path / "ctrlalign"
    shutil.copytree(ROOT / "ctrlalign", package, ignore=shutil.ignore_patterns("__pycache__"))
    records = package / "data" / "records.py"
    records.write_text(records.read_text() + "\nimport ctrlalign.cli  # noqa\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    result = lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ctrlalign layers BROKEN" in result.stdout
    assert "ctrlalign.data.records -> ctrlalign.cli" in result.stdout


def test_every_method_has_its_recipe_imported_by_name():
    """Recipes are imported statically (an arrow import-linter sees), one per METHODS entry."""
    from ctrlalign.training import METHODS, RECIPES

    assert {m.recipe for m in METHODS.values()} == set(RECIPES)
    for name, train in RECIPES.items():
        assert train.__module__ == f"ctrlalign.training.{name}"
