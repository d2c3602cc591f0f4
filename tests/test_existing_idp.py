"""An existing IdP: its own validator composed with ChainValidatorMixin, chain_grant
mounted under another prefix, and the grant works there.

Those checks live in tests/existing_idp/check_*.py and need their own settings
module (tests.existing_idp.settings). DOT's settings, the validator and server
classes it imports, and the URLconf are process-wide, so they run in a separate
pytest process. ``check_*.py`` does not match this run's ``python_files``, so the
main run never collects them under the wrong settings. The child inherits the
environment (DATABASE_URL: SQLite in memory, or PostgreSQL with a test database
of its own, test_chain_existing_idp).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = "tests.existing_idp.settings"


def run_existing_idp_checks() -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS}
    env.pop("PYTEST_ADDOPTS", None)  # the parent's options (-k, -x, --lf...) are not for the child
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--ds={SETTINGS}",
        "-o",
        "python_files=check_*.py",
        "-q",
        "--color=no",
        str(ROOT / "tests" / "existing_idp"),
    ]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_code_chain_works_in_an_existing_idp():
    result = run_existing_idp_checks()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = output.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}
    assert counts.get("passed", 0) > 0, output
    assert not {"failed", "error", "errors", "skipped", "xpassed"} & counts.keys(), output
