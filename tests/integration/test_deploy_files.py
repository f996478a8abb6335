"""The files in deploy/ are what a postmaster installs: they must at least be valid as shipped."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import require_component

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        require_component("systemd-analyze", "needed to check the shipped units (Debian package systemd)")
    installed = str(Path(sys.executable).parent / "antiforgery")
    units = []
    for unit in sorted((DEPLOY / "systemd").iterdir()):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/antiforgery/bin/antiforgery", installed))
        units.append(str(copy))
    assert units, "no units shipped"
    result = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
