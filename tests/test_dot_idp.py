"""A second, real-looking IdP (tests/dot_idp): Corp's, laid out like a typical DOT
deployment, before and after following the README's "Plug it into your DOT IdP".

* Corp's own end-to-end checks (check_e2e.py, which know nothing of chain_grant) pass
  without chain_grant (``before``) and with it (``after``), and every answer they saw
  is the same in both runs but for ``code_chain`` added to the advertised grants.
* chain_grant works there (check_chain.py, ``after`` only): a clean ``check``, the
  commands, a chain and a wallet step through Corp's validator, the review API.
* The README's change is the lines marked ``# chain_grant``, and they are few.

Each IdP runs in a pytest process of its own (DOT's settings, the validator and the
URLconf are process-wide); --confcutdir keeps tests/conftest.py (which imports
chain_grant) out of the ``before`` run. On PostgreSQL each has its own test database.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chain_grant.oauth.backend import DESCRIPTIONS
from chain_grant.settings import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
IDP = ROOT / "tests" / "dot_idp"
MAX_CHANGED_LINES = 10


@pytest.fixture(scope="module")
def oidc_key(tmp_path_factory) -> Path:
    """Corp's OIDC signing key, made for this run (keys are never committed); both runs
    sign with it, so their ID tokens and JWKS compare."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("corp") / "oidc.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def run_corp(which: str, oidc_key: Path, tmp_path: Path) -> dict:
    observations = tmp_path / f"{which}.json"
    env = {**os.environ, "CORP_OIDC_KEY": str(oidc_key), "CORP_OBSERVATIONS": str(observations)}
    env["DJANGO_SETTINGS_MODULE"] = f"tests.dot_idp.{which}.settings"
    env.pop("PYTEST_ADDOPTS", None)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--ds=tests.dot_idp.{which}.settings"]
    command += [f"--confcutdir={IDP}", "-o", "python_files=check_*.py", "-q", "--color=no"]
    if which == "before":
        command.append(f"--ignore={IDP / 'check_chain.py'}")
    result = subprocess.run([*command, str(IDP)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", output.strip().splitlines()[-1])}
    assert counts.get("passed", 0) > 0 and not {"failed", "error", "errors", "skipped"} & counts.keys(), output
    return json.loads(observations.read_text())


@pytest.fixture(scope="module")
def runs(oidc_key, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corp-runs")
    return run_corp("before", oidc_key, tmp), run_corp("after", oidc_key, tmp)


ADDED = ["code_chain", "urn:ietf:params:oauth:grant-type:token-exchange"]
SCOPES = {"chains:read", "chains:revoke"}
DISCOVERY = ("openid-configuration", "oauth-authorization-server")
DISCOVERY_ADDS = {"introspection_endpoint": "/o/introspect/", "revocation_endpoint": "/o/revoke_token/"}
DISCOVERY_TEST = "test_discovery_advertises_what_dot_serves_at_dots_urls"
AUTH_ALGS = DEFAULTS["CLIENT_ASSERTION_ALGORITHMS"]
DPOP_ALGS = DEFAULTS["DPOP_ALGORITHMS"]


def test_corps_own_checks_see_the_same_answers_with_chain_grant(runs):
    """Byte for byte but for these additions, each named here (docs/plugging-in.md):
    ``code_chain`` and RFC 8693 token exchange in the advertised grants; the two scopes the README adds in
    ``scopes_supported``; in OIDC discovery, the introspection and revocation endpoints
    DOT serves but does not list there; ``private_key_jwt`` with its algorithms among the
    client authentication methods, and ``dpop_signing_alg_values_supported``; an ``error_description`` on an OAuth error
    DOT sends without one (RFC 6749 §5.2's text for the code); and DOT 3.4.1's HTTP 500
    for prompt=none with openid (its validator lacks validate_silent_login) becomes
    DOT's own answer for prompt=none without openid, its consent page."""
    before, after = runs
    assert before.keys() == after.keys() and len(before) >= 30, before.keys() ^ after.keys()
    dots = before[f"{DISCOVERY_TEST}:oauth-authorization-server"]["json"]["grant_types_supported"]
    for key, seen in before.items():
        now = after[key]
        if key.endswith(DISCOVERY):
            # DOT's list, in DOT's order, and the chain's (OIDC discovery, where DOT lists none, gets both)
            grants = now["json"].pop("grant_types_supported")
            assert grants == [*seen["json"].pop("grant_types_supported", dots), *ADDED], key
            # the two scopes the README adds to the IdP's SCOPES, which DOT lists
            assert set(now["json"].pop("scopes_supported")) == {*seen["json"].pop("scopes_supported"), *SCOPES}, key
            # endpoints DOT serves but leaves out of OIDC discovery are added, never changed
            for name in DISCOVERY_ADDS.keys() - seen["json"].keys():
                assert now["json"].pop(name) == "http://testserver" + DISCOVERY_ADDS[name], key
            # private_key_jwt and its algorithms added to DOT's client authentication methods
            for endpoint in ("token", "introspection", "revocation"):
                methods = f"{endpoint}_endpoint_auth_methods_supported"
                if methods in now["json"]:
                    listed = seen["json"].pop(methods, ["client_secret_basic"])
                    assert now["json"].pop(methods) == [*listed, "private_key_jwt"], key
                    signing = now["json"].pop(f"{endpoint}_endpoint_auth_signing_alg_values_supported")
                    assert signing[-len(AUTH_ALGS) :] == AUTH_ALGS, key
                    seen["json"].pop(f"{endpoint}_endpoint_auth_signing_alg_values_supported", None)
            # DPoP (RFC 9449), which DOT does not have
            assert now["json"].pop("dpop_signing_alg_values_supported") == DPOP_ALGS, key
        error = seen.get("json", {}).get("error") if isinstance(seen.get("json"), dict) else None
        if error and "error_description" not in seen["json"]:
            assert now["json"].pop("error_description") == DESCRIPTIONS[error], key
        if key.endswith(":prompt-none"):
            assert seen["status"] == 500 and now["status"] == 200 and 'name="allow"' in now["html"], key
            continue
        assert now == seen, key


def changed_lines() -> list[str]:
    lines = []
    for name in ("settings.py", "urls.py", "validators.py"):
        old = (IDP / "before" / name).read_text().splitlines()
        new = (IDP / "after" / name).read_text().splitlines()
        diff = difflib.unified_diff(old, new, lineterm="", n=0)
        lines += [line[1:] for line in diff if line.startswith("+") and not line.startswith("+++") and line[1:].strip()]
    return lines


def test_the_readme_changes_ten_lines_of_the_idp_each_marked():
    lines = changed_lines()
    assert all(line.endswith("# chain_grant") or "# chain_grant:" in line for line in lines), lines
    assert len(lines) <= MAX_CHANGED_LINES, lines


def test_the_marked_lines_are_the_readmes():
    """Each line the IdP changed is (comments aside) a line of the README's plug-in section;
    only the validator's name is the IdP's own."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Plug it into your DOT IdP") : readme.index("## Settings reference")]
    code = {re.sub(r"\s+", "", line.split("  #")[0]) for line in section.splitlines()}
    for line in changed_lines():
        stripped = re.sub(r"\s+", "", line.split("  #")[0]).replace("CorpValidator", "MyValidator")
        assert stripped in code, line
