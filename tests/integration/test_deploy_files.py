"""The files in deploy/ are what a postmaster installs: they must at least be valid as shipped."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from components import require_component

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        require_component("systemd-analyze", "needed to check the shipped units (Debian package systemd)")
    assert analyze is not None  # require_component does not return
    installed = str(Path(sys.executable).parent / "antiforgery")
    units = []
    for unit in sorted((DEPLOY / "systemd").iterdir()):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/antiforgery/bin/antiforgery", installed))
        units.append(str(copy))
    assert units, "no units shipped"
    result = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


MTA_SNIPPETS = sorted([*(DEPLOY / "postfix").glob("*.cf"), *(DEPLOY / "exim").glob("*.conf")])


def test_every_mta_snippet_is_named_in_the_readme_and_loaded_by_a_test() -> None:
    """README: "Each snippet is loaded as-is by the integration tests ... what is documented is what is tested"."""
    root = DEPLOY.parent
    readme = (root / "README.md").read_text()
    table = readme.split("## Deploying on Postfix and Exim", 1)[1].split("\n## ", 1)[0]
    tests = "\n".join(path.read_text() for path in (root / "tests").rglob("test_*.py"))
    assert MTA_SNIPPETS
    for snippet in MTA_SNIPPETS:
        assert snippet.name in table, f"{snippet.name} is not in README's deploy table"
        assert f'"{snippet.name}"' in tests, f"no test loads {snippet.name}"


def test_postfix_snippets_set_only_parameters_postfix_knows(tmp_path: Path) -> None:
    """A misspelt parameter in main.cf or an -o line is silently ignored by Postfix; postconf names it."""
    postconf = shutil.which("postconf")
    if postconf is None:
        require_component("postconf", "needed to check the shipped Postfix snippets (Debian package postfix)")
    assert postconf is not None  # require_component does not return
    snippets = sorted((DEPLOY / "postfix").glob("*.cf"))
    main = "".join(p.read_text() for p in snippets if p.name.endswith("main.cf"))
    master = "".join(p.read_text() for p in snippets if p.name.endswith("master.cf"))
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\n" + main)
    (tmp_path / "master.cf").write_text(Path("/usr/share/postfix/master.cf.dist").read_text() + master)
    for listing in ("-n", "-M", "-P"):  # main.cf, master.cf services, master.cf -o parameters
        result = subprocess.run([postconf, "-c", str(tmp_path), listing], capture_output=True, text=True, check=False)
        assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    services = subprocess.run([postconf, "-c", str(tmp_path), "-M"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^127\.0\.0\.1:10025 +inet ", services, re.MULTILINE)  # the proxy's listener: loopback only
