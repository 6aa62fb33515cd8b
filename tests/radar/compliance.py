"""compliance-checker's CF-1.8 check of a netCDF file, as a list of what failed.

compliance-checker ships the CF standard-name table (``compliance_checker/data``), so this
runs offline.
"""

from __future__ import annotations

import json
from pathlib import Path


def cf_failures(path: Path) -> list[str]:
    """Every failed cf:1.8 check of ``path`` (errors, warnings and information alike)."""
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite.load_all_available_checkers()
    report = Path(f"{path}.cf.json")
    ComplianceChecker.run_checker(str(path), ["cf:1.8"], 0, "normal", output_filename=str(report),
                                  output_format="json")
    checks = json.loads(report.read_text())["cf:1.8"]
    return [f"{level}: {check['name']}: {check['msgs']}"
            for level in ("high_priorities", "medium_priorities", "low_priorities")
            for check in checks[level] if check["value"][0] < check["value"][1]]
