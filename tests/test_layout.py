"""The layering of the packages: lower layers never import higher ones (README, Layout).

model (networks, sampler, checkpoint, the nowcast pipeline) <- radar (radar data I/O)
<- verification (scores, baselines, evaluate) <- training (loss, loop, scorecard)
<- service (API, queue, worker) <- cli (the ``nowcast`` command). The service imports
neither training nor verification: the checkpoint folder is the only contract between them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "radar", "verification", "training", "service", "cli")
ALLOWED = {
    "model": {"model"},
    "radar": {"radar", "model"},
    "verification": {"verification", "model", "radar"},
    "training": {"training", "model", "radar", "verification"},
    "service": {"service", "model", "radar"},
    "cli": set(PACKAGES),
}


def imported_packages(path: Path) -> set[str]:
    """The project packages a module imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_packages(path) - ALLOWED[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"{package} may import only {sorted(ALLOWED[package])}; found {offenders}"


def test_the_layering_rule_catches_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from training.train import train\n    import service.jobs\n")
    assert imported_packages(module) == {"training", "service"}
