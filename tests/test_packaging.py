"""The wheel builds, installs into a clean venv, and passes ``django check`` with
minimal settings.

Slow-ish (builds a wheel, creates a venv and pip-installs the runtime
dependencies) and needs a package index (PyPI or the configured mirror): run it
alone with ``pytest -m packaging``, leave it out with ``-m "not packaging"``.

Nothing here touches the working tree: the project is copied to a temporary
directory and built there, so no ``build/`` or ``*.egg-info`` is left behind,
and the installed package is exercised from a directory that cannot see the
repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from email.parser import HeaderParser
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import pytest

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "chain_grant"
DIST_NAME = "django-chain-grant"
TIMEOUT = 600  # seconds, per subprocess: pip may have to download Django & co.

# Top-level entries of the working tree that are never part of a build.
_NOT_SOURCE_TOP = {
    ".git",
    ".venv",
    "venv",
    "var",
    "build",
    "dist",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "test-artifacts",
    "node_modules",
}
# Anywhere in the tree: bytecode, caches, build leftovers, editor droppings.
_NOT_SOURCE_ANY = ("__pycache__", "*.pyc", "*.pyo", "*.egg-info", ".DS_Store", "*~", "*.swp")
# Nothing from these must end up in the wheel.
_NOT_SHIPPED = ("idp_project", "tests", "scripts", "bench", "deploy", "docs", "var", "manage.py")


# --------------------------------------------------------------------------- helpers


def run(cmd: list[str | os.PathLike], *, cwd: Path, env: dict[str, str] | None = None, what: str):
    """Run ``cmd``; on a non-zero exit fail the test with the command's full output."""
    try:
        result = subprocess.run(
            [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what}: timed out after {TIMEOUT}s\n$ {' '.join(map(str, cmd))}\n{_output(exc)}")
    assert result.returncode == 0, (
        f"{what}: exit status {result.returncode}\n$ {' '.join(map(str, cmd))}\n{_output(result)}"
    )
    return result


def _output(result) -> str:
    def text(value):
        return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")

    return f"--- stdout ---\n{text(result.stdout)}\n--- stderr ---\n{text(result.stderr)}"


def _ignore(directory: str, names: list[str]) -> set[str]:
    ignored = set(shutil.ignore_patterns(*_NOT_SOURCE_ANY)(directory, names))
    if Path(directory).resolve() == REPO:
        ignored |= _NOT_SOURCE_TOP & set(names)
    return ignored


def source_files(package_dir: Path) -> set[str]:
    """Files of the package in the working tree, as wheel paths (``chain_grant/...``)."""
    found = set()
    for path in package_dir.rglob("*"):
        rel = path.relative_to(package_dir.parent)
        if path.is_file() and not any(fnmatch(part, pat) for part in rel.parts for pat in _NOT_SOURCE_ANY):
            found.add(PurePosixPath(*rel.parts).as_posix())
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus anything that could make the clean venv see the
    repository or another interpreter's packages (pip's own settings are kept: CI may
    point it at a mirror)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "PYTHONPATH",
            "PYTHONHOME",
            "PYTHONSTARTUP",
            "VIRTUAL_ENV",
            "DJANGO_SETTINGS_MODULE",
            "DATABASE_URL",
            "PYTHONSAFEPATH",
        }
    }
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


def venv_bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the working tree (never from the tree itself)."""
    before = {p.name for p in REPO.iterdir()}
    src = tmp_path_factory.mktemp("src") / "project"
    shutil.copytree(REPO, src, ignore=_ignore, symlinks=True)
    outdir = tmp_path_factory.mktemp("dist")
    run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", outdir, src],
        cwd=src,
        env=clean_env(),
        what="building the wheel",
    )
    leftovers = {p.name for p in REPO.iterdir()} - before
    assert not {n for n in leftovers if n in {"build", "dist"} or n.endswith(".egg-info")}, (
        f"the build left {sorted(leftovers)} in the working tree"
    )
    wheels = sorted(outdir.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {outdir}, found {[w.name for w in wheels]}"
    return wheels[0]


@pytest.fixture(scope="module")
def wheel_files(wheel) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return [n for n in zf.namelist() if not n.endswith("/")]


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A brand-new venv (no system site-packages) with the wheel pip-installed."""
    path = tmp_path_factory.mktemp("venv") / "env"
    cwd = tmp_path_factory.mktemp("cwd")
    run([sys.executable, "-m", "venv", path], cwd=cwd, env=clean_env(), what="creating a venv")
    python = venv_bin(path, "python")
    run(
        [python, "-m", "pip", "install", "--quiet", wheel],
        cwd=cwd,
        env=clean_env(),
        what="pip install of the wheel (and its dependencies) into a clean venv",
    )
    run([python, "-m", "pip", "check"], cwd=cwd, env=clean_env(), what="pip check in the clean venv")
    return path


MINIMAL_SETTINGS = """\
    from pathlib import Path

    BASE_DIR = Path(__file__).resolve().parent
    SECRET_KEY = "packaging-test-not-secret"
    DEBUG = False
    ALLOWED_HOSTS = ["localhost"]
    INSTALLED_APPS = [
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.admin",
        "django.contrib.messages",
        "oauth2_provider",
        "chain_grant",
    ]
    MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ]
    ROOT_URLCONF = "minimal_urls"
    TEMPLATES = [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "DIRS": [],
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ],
            },
        },
    ]
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
    DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
    USE_TZ = True
    # The README's: every handler redacts (else chain_grant.W005).
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "chain_grant.redaction.RedactFilter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["redact"]}},
        "root": {"handlers": ["console"], "level": "WARNING"},
        "loggers": {"django": {"handlers": [], "propagate": True}},
    }
    # Deliberately no OAUTH2_PROVIDER_*_MODEL settings: the stock django-oauth-toolkit models.
    OAUTH2_PROVIDER = {
        "OAUTH2_SERVER_CLASS": "chain_grant.server.ChainServer",
        "OAUTH2_VALIDATOR_CLASS": "chain_grant.validators.ChainOAuth2Validator",
        "OAUTH2_BACKEND_CLASS": "chain_grant.backends.ChainOAuthLibCore",
        "OIDC_ISS_ENDPOINT": "https://idp.example/oauth",
    }
"""

MINIMAL_URLS = """\
    from django.contrib import admin
    from django.urls import include, path

    urlpatterns = [
        path("admin/", admin.site.urls),
        path("oauth/", include("chain_grant.urls")),
    ]
"""


@pytest.fixture(scope="module")
def idp(tmp_path_factory, venv):
    """A throw-away IdP directory (outside the repository) and a runner for
    ``django-admin`` commands in the clean venv against its minimal settings."""
    site = tmp_path_factory.mktemp("idp")
    (site / "minimal_settings.py").write_text(textwrap.dedent(MINIMAL_SETTINGS))
    (site / "minimal_urls.py").write_text(textwrap.dedent(MINIMAL_URLS))
    env = clean_env(DJANGO_SETTINGS_MODULE="minimal_settings", PYTHONPATH=str(site))
    env["PATH"] = os.pathsep.join([str(venv_bin(venv, "")), env.get("PATH", "")])

    def django_admin(*args: str):
        return run(
            [venv_bin(venv, "django-admin"), *args],
            cwd=site,
            env=env,
            what=f"django-admin {' '.join(args)} (clean venv, minimal settings)",
        )

    django_admin.python = venv_bin(venv, "python")
    django_admin.site = site
    django_admin.env = env
    return django_admin


# --------------------------------------------------------------------------- the wheel


def test_wheel_holds_only_the_package(wheel_files):
    dist_info = f"{DIST_NAME.replace('-', '_')}-"
    top = {n.split("/", 1)[0] for n in wheel_files}
    strays = {t for t in top if t != PACKAGE and not (t.startswith(dist_info) and t.endswith(".dist-info"))}
    assert not strays, f"the wheel holds more than {PACKAGE}/ and its dist-info: {sorted(strays)}"
    for name in wheel_files:
        first = name.split("/", 1)[0]
        assert first not in _NOT_SHIPPED, f"{name} must not be in the wheel"
        bytecode = "__pycache__" in name or name.endswith((".pyc", ".pyo"))
        assert not bytecode, f"bytecode in the wheel: {name}"


def test_wheel_ships_every_package_file(wheel_files):
    shipped = {n for n in wheel_files if n.startswith(f"{PACKAGE}/")}
    for required in (
        f"{PACKAGE}/py.typed",
        f"{PACKAGE}/models.py",
        f"{PACKAGE}/migrations/__init__.py",
        f"{PACKAGE}/migrations/0001_initial.py",
    ):
        assert required in shipped, f"{required} is missing from the wheel"
    # Templates, static files, locale... whatever the source tree has must ship.
    expected = source_files(REPO / PACKAGE)
    missing = sorted(expected - shipped)
    assert not missing, f"files of {PACKAGE}/ missing from the wheel (package-data?): {missing}"
    extra = sorted(shipped - expected)
    assert not extra, f"files in the wheel that are not in the source tree: {extra}"


def test_wheel_ships_templates_if_any(wheel_files):
    templates = sorted(f for f in source_files(REPO / PACKAGE) if f.startswith(f"{PACKAGE}/templates/"))
    if not templates:
        return  # nothing to ship yet (an empty directory); the test above covers it when there is
    missing = [t for t in templates if t not in wheel_files]
    assert not missing, f"templates missing from the wheel: {missing}"


def test_wheel_metadata(wheel, wheel_files):
    metadata_path = next((n for n in wheel_files if n.endswith(".dist-info/METADATA")), None)
    assert metadata_path, f"no METADATA in {wheel.name}"
    with zipfile.ZipFile(wheel) as zf:
        metadata = HeaderParser().parsestr(zf.read(metadata_path).decode())
    assert metadata["Name"] == DIST_NAME, f"distribution name is {metadata['Name']!r}"
    requires = " | ".join(metadata.get_all("Requires-Dist") or [])
    for dependency in ("Django", "django-oauth-toolkit", "oauthlib", "jwcrypto"):
        assert dependency.lower() in requires.lower(), f"{dependency} is not in Requires-Dist: {requires}"


# --------------------------------------------------------------------------- the installed package


def test_installed_package_comes_from_the_venv(idp, venv):
    result = run(
        [idp.python, "-c", "import chain_grant, oauth2_provider; print(chain_grant.__file__)"],
        cwd=idp.site,
        env=idp.env,
        what="importing the installed chain_grant",
    )
    location = Path(result.stdout.strip()).resolve()
    assert venv.resolve() in location.parents, f"chain_grant imported from {location}, not from the venv"
    assert REPO not in location.parents, f"the clean venv imported the working tree's {location}"
    typed = location.parent / "py.typed"
    assert typed.is_file(), f"{typed} is not installed"


def test_django_check_passes_with_minimal_settings(idp):
    result = idp("check", "--fail-level", "WARNING")
    out = result.stdout + result.stderr
    assert "chain_grant." not in out, f"chain_grant system check messages:\n{_output(result)}"
    assert "no issues" in result.stdout, _output(result)


def test_deploy_checks_have_nothing_from_chain_grant(idp):
    # Minimal settings get Django's own security warnings; chain_grant must add none.
    result = idp("check", "--deploy")
    assert "chain_grant." not in result.stdout + result.stderr, _output(result)


def test_migrations_ship_and_are_complete(idp):
    idp("migrate", "--noinput")
    # Exits 1 when a model change has no migration; with the stock oauth2_provider
    # models (no OAUTH2_PROVIDER_*_MODEL settings) there must be nothing to create.
    result = idp("makemigrations", "--check", "--dry-run")
    assert "No changes detected" in result.stdout, _output(result)
    result = idp("showmigrations", "chain_grant")
    assert "[X] 0001_initial" in result.stdout, _output(result)
