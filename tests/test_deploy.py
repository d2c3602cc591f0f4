"""deploy/, checked offline: the production settings (`check --deploy` clean), the
gunicorn configuration (workers, timeouts, redacted logs, a real run), the Dockerfile,
the compose file, the Kubernetes manifests, nginx and the systemd units. Nothing here
needs Docker, a cluster or root."""

from __future__ import annotations

import json
import os
import re
import runpy
import secrets
import shutil
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers import free_port

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
GUNICORN_CONF = DEPLOY / "gunicorn.conf.py"
SECRET_ENV = {"SECRET_KEY", "DATABASE_URL", "METRICS_TOKEN", "POSTGRES_PASSWORD"}


# --- production settings ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def oidc_key(tmp_path_factory) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("oidc") / "oidc_rsa.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def production_env(tmp_path, oidc_key, **overrides):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IDP_", "CHAIN_", "SECURE_", "OAUTH2_"))
        and k
        not in (
            "DEBUG",
            "SECRET_KEY",
            "SECRET_KEY_FILE",
            "ALLOWED_HOSTS",
            "OIDC_ISSUER",
            "OIDC_KEY_PATH",
            "METRICS_TOKEN",
            "REDIS_URL",
            "CACHE_URL",
            "CELERY_BROKER_URL",
            "LOG_FORMAT",
            "DATABASE_URL",
        )
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "idp_project.settings",
            "IDP_PRODUCTION": "1",
            "IDP_VAR_DIR": str(tmp_path / "var"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "idp.example.com",
            "CSRF_TRUSTED_ORIGINS": "https://idp.example.com",
            "OIDC_ISSUER": "https://idp.example.com/oauth",
            "OIDC_KEY_PATH": str(oidc_key),
            "REDIS_URL": "redis://127.0.0.1:6379/12",
        }
    )
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def manage(env, *args, timeout=120):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_check_deploy_is_clean_with_the_production_flag(tmp_path, oidc_key):
    result = manage(production_env(tmp_path, oidc_key), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    # Nothing generated: the key and SECRET_KEY come from outside.
    assert not (tmp_path / "var" / "secret_key").exists() and not (tmp_path / "var" / "oidc_rsa.pem").exists()


def test_without_the_flag_check_deploy_does_complain(tmp_path, oidc_key):
    """The flag is what makes it clean: the development defaults are not production-ready."""
    env = production_env(tmp_path, oidc_key, IDP_PRODUCTION=None)
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


PRINT_SETTINGS = """
import json, django
from django.conf import settings
django.setup()
print(json.dumps({name: getattr(settings, name, None) for name in (
    "DEBUG", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_PROXY_SSL_HEADER", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
    "CHAIN_GRANT_METRICS_REQUIRE_TOKEN", "CHAIN_GRANT_METRICS_TOKEN", "CACHES", "SECRET_KEY")}
    | {"CONN_MAX_AGE": settings.DATABASES["default"]["CONN_MAX_AGE"],
       "REDIRECT_SCHEMES": settings.OAUTH2_PROVIDER.get("ALLOWED_REDIRECT_URI_SCHEMES"),
       "ISSUER": settings.OAUTH2_PROVIDER["OIDC_ISS_ENDPOINT"],
       "KEY_FROM_FILE": settings.OAUTH2_PROVIDER["OIDC_RSA_PRIVATE_KEY"] == open(settings.OIDC_KEY_PATH).read(),
       "DJANGO_LOGGER": settings.LOGGING["loggers"].get("django")},
    default=str))
"""


def production_settings(env) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_production_settings(tmp_path, oidc_key):
    secret_file, token_file = tmp_path / "secret_key", tmp_path / "metrics_token"
    secret_file.write_text(secrets.token_urlsafe(50) + "\n")
    token_file.write_text("scrape-token\n")
    seen = production_settings(
        production_env(
            tmp_path, oidc_key, SECRET_KEY=None, SECRET_KEY_FILE=str(secret_file), METRICS_TOKEN_FILE=str(token_file)
        )
    )
    assert seen["DEBUG"] is False
    assert seen["SECRET_KEY"] == secret_file.read_text().strip()  # a mounted file, stripped
    assert seen["ALLOWED_HOSTS"] == ["idp.example.com"]
    assert seen["CSRF_TRUSTED_ORIGINS"] == ["https://idp.example.com"]
    assert seen["SECURE_SSL_REDIRECT"] is True and seen["SECURE_HSTS_SECONDS"] >= 31536000
    assert seen["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert seen["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert seen["SESSION_COOKIE_SECURE"] is True and seen["CSRF_COOKIE_SECURE"] is True
    assert seen["CHAIN_GRANT_METRICS_REQUIRE_TOKEN"] is True and seen["CHAIN_GRANT_METRICS_TOKEN"] == "scrape-token"
    assert seen["CACHES"]["default"]["BACKEND"] == "idp_project.health.FailSafeRedisCache"
    assert seen["CONN_MAX_AGE"] == 60
    assert seen["REDIRECT_SCHEMES"] == ["https"]
    assert seen["ISSUER"] == "https://idp.example.com/oauth" and seen["KEY_FROM_FILE"] is True
    assert seen["DJANGO_LOGGER"]["handlers"] == ["console"]  # 500s reach stderr with DEBUG off


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SECRET_KEY": None}, "SECRET_KEY (or SECRET_KEY_FILE)"),
        ({"ALLOWED_HOSTS": None, "OIDC_ISSUER": None}, "ALLOWED_HOSTS, OIDC_ISSUER"),
        ({"DEBUG": "1"}, "DEBUG on"),
        ({"OIDC_KEY_PATH": "/nonexistent/oidc.pem"}, "is not a file"),
        (
            {"SECRET_KEY": None, "SECRET_KEY_FILE": "/nonexistent/secret"},
            "SECRET_KEY_FILE=/nonexistent/secret cannot be",
        ),
    ],
)
def test_production_refuses_to_start_half_configured(tmp_path, oidc_key, change, message):
    result = manage(production_env(tmp_path, oidc_key, **change), "check")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and message in result.stderr
    assert not (tmp_path / "var" / "oidc_rsa.pem").exists()  # never generated in production


def test_defaults_without_the_flag_are_unchanged(settings):
    """What `make run` and the suite rely on (tests.settings derives from idp_project.settings)."""
    from idp_project import settings as idp

    assert idp.PRODUCTION is False and settings.DEBUG is False
    assert not getattr(settings, "SECURE_SSL_REDIRECT", False) and not settings.SESSION_COOKIE_SECURE
    assert settings.SECURE_HSTS_SECONDS == 0 and settings.SECURE_PROXY_SSL_HEADER is None
    assert "ALLOWED_REDIRECT_URI_SCHEMES" not in idp.OAUTH2_PROVIDER
    assert idp.CHAIN_GRANT_METRICS_REQUIRE_TOKEN is False
    assert idp.CELERY_BEAT_SCHEDULE["chain-grant-expire-steps"]["schedule"] == float(
        os.environ.get("CHAIN_EXPIRE_INTERVAL", "60")
    )
    if not (os.environ.get("REDIS_URL") or os.environ.get("CACHE_URL")):
        assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"
    if not os.environ.get("LOG_FORMAT"):
        assert idp.LOGGING["loggers"] == {
            "chain_grant": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},  # redacted
            "django": {"handlers": [], "level": "INFO", "propagate": True},  # to root's redacting console
            "django.db.backends": {"level": "INFO"},  # never SQL parameters
        }
        assert idp.LOGGING["root"] == {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")}


# --- gunicorn ----------------------------------------------------------------------------------


@pytest.fixture
def gunicorn_conf(monkeypatch, tmp_path):
    """deploy/gunicorn.conf.py's namespace, loaded as gunicorn does (with a metrics dir of its own)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prometheus"))
    for name in ("GUNICORN_WORKERS", "WEB_CONCURRENCY", "GUNICORN_TIMEOUT", "GUNICORN_CONTROL_SOCKET", "LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    return runpy.run_path(str(GUNICORN_CONF))


def test_gunicorn_workers_come_from_the_cpus_and_env(gunicorn_conf, monkeypatch):
    assert gunicorn_conf["workers"] == gunicorn_conf["usable_cpus"]() + 1
    assert 1 <= gunicorn_conf["usable_cpus"]() <= (os.cpu_count() or 1)
    assert gunicorn_conf["timeout"] == 30 and gunicorn_conf["graceful_timeout"] == 30
    assert gunicorn_conf["keepalive"] == 5 and gunicorn_conf["max_requests"] > 0
    assert gunicorn_conf["wsgi_app"] == "idp_project.wsgi:application"
    assert gunicorn_conf["control_socket_disable"] is True  # two instances on one host, read-only $HOME
    monkeypatch.setenv("GUNICORN_WORKERS", "7")
    monkeypatch.setenv("GUNICORN_TIMEOUT", "45")
    again = runpy.run_path(str(GUNICORN_CONF))
    assert again["workers"] == 7 and again["timeout"] == 45


def test_gunicorn_config_is_accepted_by_gunicorn(monkeypatch, tmp_path):
    from gunicorn.config import Config

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    namespace = runpy.run_path(str(GUNICORN_CONF))
    cfg = Config()
    for name, value in namespace.items():
        if name in cfg.settings:
            cfg.set(name, value)
    assert cfg.logger_class is namespace["RedactingLogger"]
    assert cfg.workers == namespace["workers"] and cfg.control_socket_disable is True


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "GET /oauth/authorize/?client_id=c&code=AbC-123_x&state=s1 HTTP/1.1",
            "GET /oauth/authorize/?client_id=c&code=[REDACTED]&state=s1 HTTP/1.1",
        ),
        ("code=first&code_challenge=keep&state=keep", "code=[REDACTED]&code_challenge=keep&state=keep"),
        (
            "/cb?ID_TOKEN=eyJ.x.y;refresh_token=r&Access_Token=a",
            "/cb?ID_TOKEN=[REDACTED];refresh_token=[REDACTED]&Access_Token=[REDACTED]",
        ),
        (
            "/x?code_verifier=v&client_secret=s&password=p&assertion=a&client_assertion=c&token=t",
            "/x?code_verifier=[REDACTED]&client_secret=[REDACTED]&password=[REDACTED]&assertion=[REDACTED]"
            "&client_assertion=[REDACTED]&token=[REDACTED]",
        ),
        (
            "/wallet/requests/1/complete?response_code=rc1&poll=pt2",
            "/wallet/requests/1/complete?response_code=[REDACTED]&poll=[REDACTED]",
        ),
        (
            "/accounts/login/?next=/oauth/authorize/%3Fclient_id%3Dx%26code%3DSECRET1%26state%3Ds",
            "/accounts/login/?next=/oauth/authorize/%3Fclient_id%3Dx%26code%3D[REDACTED]%26state%3Ds",
        ),
        (
            "/login?next=%252Fauthorize%253Fcode%253DSECRET2%2526x%253D1",
            "/login?next=%252Fauthorize%253Fcode%253D[REDACTED]%2526x%253D1",
        ),
        (
            "/logout?id_token_hint=eyJhbGciOi.x.y&post_logout_redirect_uri=z",
            "/logout?id_token_hint=[REDACTED]&post_logout_redirect_uri=z",
        ),
        (
            "/cb?xcode=keep&codes=keep&token_type_hint=keep&state=keep&nonce=keep",
            "/cb?xcode=keep&codes=keep&token_type_hint=keep&state=keep&nonce=keep",
        ),
        ("/cb?code=", "/cb?code="),
    ],
)
def test_redaction(gunicorn_conf, line, expected):
    assert gunicorn_conf["redact"](line) == expected


class FakeResponse:
    status = "302 Found"
    sent = 0
    headers = [("Location", "http://127.0.0.1:8765/cb?code=NEXTCODE&state=s"), ("Set-Cookie", "sessionid=abc")]


def fake_request(uri="/oauth/authorize/?code=PREVIOUS&state=s&response_type=code"):
    path, _, query = uri.partition("?")
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": uri,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.9",
        "HTTP_REFERER": "https://rp/?code=REFCODE",
        "HTTP_USER_AGENT": "ua",
        "HTTP_AUTHORIZATION": "Basic Y2xpZW50OnNlY3JldA==",
    }
    headers = [("AUTHORIZATION", "Basic Y2xpZW50OnNlY3JldA=="), ("COOKIE", "sessionid=abc"), ("X-REQUEST-ID", "r1")]
    return type("Req", (), {"headers": headers})(), environ


def make_logger(gunicorn_conf, tmp_path, fmt=None):
    from gunicorn.config import Config

    cfg = Config()
    cfg.set("accesslog", str(tmp_path / "access.log"))
    cfg.set("errorlog", str(tmp_path / "error.log"))
    cfg.set("access_log_format", fmt or gunicorn_conf["access_log_format"])
    return gunicorn_conf["RedactingLogger"](cfg)


def test_access_log_lines_never_carry_a_code(gunicorn_conf, tmp_path):
    import datetime

    fmt = gunicorn_conf["access_log_format"] + (
        " %({authorization}i)s %({cookie}i)s %({set-cookie}o)s %({location}o)s %({http_authorization}e)s"
        " %({raw_uri}e)s %(q)s %(U)s %({x-request-id}i)s"
    )
    log = make_logger(gunicorn_conf, tmp_path, fmt)
    req, environ = fake_request()
    log.access(FakeResponse(), req, environ, datetime.timedelta(milliseconds=12))
    line = (tmp_path / "access.log").read_text()
    for secret in ("PREVIOUS", "NEXTCODE", "REFCODE", "Y2xpZW50OnNlY3JldA", "sessionid=abc"):
        assert secret not in line
    assert "code=[REDACTED]&state=s&response_type=code" in line and "r1" in line
    assert "?code=[REDACTED]" in line  # the referer


def test_json_access_log(gunicorn_conf, tmp_path, monkeypatch):
    import datetime

    monkeypatch.setitem(gunicorn_conf["RedactingLogger"].access.__globals__, "JSON_LOGS", True)
    log = make_logger(gunicorn_conf, tmp_path)
    log.setup(log.cfg)
    req, environ = fake_request()
    log.access(FakeResponse(), req, environ, datetime.timedelta(milliseconds=12))
    entry = json.loads((tmp_path / "access.log").read_text().strip())
    assert entry["logger"] == "gunicorn.access" and entry["method"] == "GET" and entry["status"] == 302
    assert entry["path"] == "/oauth/authorize/" and entry["query"] == "code=[REDACTED]&state=s&response_type=code"
    assert entry["referer"] == "https://rp/?code=[REDACTED]" and entry["duration_ms"] == 12


def test_error_log_lines_are_redacted_too(gunicorn_conf, tmp_path):
    log = make_logger(gunicorn_conf, tmp_path)
    try:
        raise ValueError("bad request line /x?client_secret=SEKRET")
    except ValueError:
        log.exception("Error handling request %s", "/oauth/authorize/?code=ERRCODE&state=s")
    for handler in log.error_log.handlers:
        handler.flush()
    text = (tmp_path / "error.log").read_text()
    assert "ERRCODE" not in text and "SEKRET" not in text
    assert "code=[REDACTED]&state=s" in text and "client_secret=[REDACTED]" in text


def get(url, token=None):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_gunicorn_serves_with_the_config(tmp_path):
    """A real gunicorn (2 workers) with deploy/gunicorn.conf.py: probes, metrics added up
    over both workers (multiprocess mode), redacted access log, clean shutdown."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "GUNICORN_", "PROMETHEUS_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "idp_project.settings",
            "IDP_VAR_DIR": str(tmp_path / "var"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
            "METRICS_TOKEN": "scrape",
            "LOG_FORMAT": "",
        }
    )
    (tmp_path / "prom").mkdir()
    (tmp_path / "prom" / "counter_99999.db").write_bytes(b"stale")  # emptied at start
    assert manage(env, "migrate", "-v0").returncode == 0
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", str(GUNICORN_CONF)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        assert not (tmp_path / "prom" / "counter_99999.db").exists()
        assert get(base + "/readyz?code=LEAKME&state=ok")[0] == 200
        for _ in range(6):  # spread over both workers
            body = urllib.parse.urlencode({"grant_type": "code_chain"}).encode()
            try:
                urllib.request.urlopen(urllib.request.Request(base + "/oauth/token", body), timeout=10)
            except urllib.error.HTTPError as exc:
                assert exc.code in (400, 401)
        assert get(base + "/metrics")[0] == 401
        status, text = get(base + "/metrics", token="scrape")
        assert status == 200
        counted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("chain_grant_handoffs_total{")
        )
        assert counted == 6
    finally:
        server.terminate()
        server.wait(30)
    output = log.read_text()
    assert "LEAKME" not in output and "GET /readyz?code=[REDACTED]&state=ok" in output
    assert len(set(re.findall(r"Booting worker with pid: (\d+)", output))) == 2
    assert "Shutting down: Master" in output


# --- Dockerfile -----------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_dockerfile():
    steps = dockerfile_instructions()
    froms = [args for op, args in steps if op == "FROM"]
    assert froms and all(f.startswith("python:3.11-slim") for f in froms)
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]  # the runtime stage
    users = [args for op, args in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert int(users[-1].split(":")[0]) >= 1000  # numeric: runAsNonRoot can check it
    runs = " ".join(args for op, args in final if op == "RUN")
    assert "collectstatic" in runs and "useradd" in runs
    assert "rm -rf /tmp/build-var" in runs  # the throw-away key of collectstatic is not in the image
    healthchecks = [args for op, args in final if op == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0]
    env = " ".join(args for op, args in final if op == "ENV")
    assert "SECRET_KEY" not in env and "DATABASE_URL" not in env and "OIDC_KEY" not in env
    assert "gunicorn.conf.py" in [args for op, args in final if op == "CMD"][-1]
    copies = " ".join(args for op, args in final if op == "COPY")
    assert "var" not in copies.split() and ".venv" not in copies
    # Runtime pins only: the build stage cuts requirements.txt at its "Tests and tooling" marker.
    all_runs = " ".join(args for op, args in steps if op == "RUN")
    assert "sed '/^# Tests and tooling/,$d' requirements.txt" in all_runs
    assert "\n# Tests and tooling\n" in (REPO / "requirements.txt").read_text()
    ignore = [
        line
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "**"  # deny by default, then allow what the image copies
    assert not any(line.startswith("!") and ("secret" in line or "var" in line.split("/")) for line in ignore)


def test_requirements_pin_pyyaml():
    lines = (REPO / "requirements.txt").read_text().splitlines()
    assert lines[lines.index("prometheus-client==0.26.0") + 1].startswith("PyYAML==")


# --- docker compose ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_services(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "beat", "nginx"}
    assert services["web"]["deploy"]["replicas"] == 2
    assert services["beat"]["deploy"]["replicas"] == 1 and "beat" in services["beat"]["command"]
    assert "worker" in services["worker"]["command"]
    assert services["migrate"]["restart"] == "no" and "migrate" in " ".join(services["migrate"]["command"])
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["nginx"]["depends_on"]["web"] == {"condition": "service_healthy"}
    assert {"postgres", "redis", "nginx"} <= {n for n, s in services.items() if "healthcheck" in s}
    assert services["web"]["command"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py"]
    mounts = services["nginx"]["volumes"]
    assert "./nginx/compose.conf:/etc/nginx/conf.d/default.conf:ro" in mounts
    assert all("ports" not in services[n] for n in ("postgres", "redis", "web", "worker", "beat", "migrate"))


def test_compose_app_containers_are_locked_down_and_secrets_are_files(compose):
    services = compose["services"]
    for name in ("migrate", "web", "worker", "beat"):
        service = services[name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        env = service["environment"]
        assert env["IDP_PRODUCTION"] == "1"
        assert not SECRET_ENV & set(env), f"{name}: a secret inlined in the environment"
        assert env["SECRET_KEY_FILE"].startswith("/run/secrets/") and env["OIDC_KEY_PATH"].startswith("/run/secrets/")
        assert env["DATABASE_URL_FILE"].startswith("/run/secrets/")
        assert {"secret_key", "oidc_rsa_key", "database_url"} <= set(service["secrets"])
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert all(set(s) == {"file"} and s["file"].startswith("./secrets/") for s in compose["secrets"].values())
    ignored = (DEPLOY / ".gitignore").read_text().splitlines()
    assert "/secrets/" in ignored and "/.env" in ignored


def test_make_secrets_creates_private_files_once(tmp_path):
    script = tmp_path / "make-secrets.sh"
    shutil.copy(DEPLOY / "make-secrets.sh", script)
    assert os.access(DEPLOY / "make-secrets.sh", os.X_OK)
    first = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    made = {p.name: p.read_bytes() for p in (tmp_path / "secrets").iterdir()}
    assert set(made) == {"secret_key", "metrics_token", "postgres_password", "database_url", "oidc_rsa.pem"}
    for path in (tmp_path / "secrets").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert (
        made["database_url"].decode().strip() == f"postgres://idp:{made['postgres_password'].decode().strip()}"
        "@postgres:5432/idp"
    )
    assert b"PRIVATE KEY" in made["oidc_rsa.pem"] and len(made["secret_key"].strip()) >= 50
    assert subprocess.run(["sh", str(script)], capture_output=True, timeout=60).returncode == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "secrets").iterdir()} == made  # never rotated by accident


# --- Kubernetes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict]:
    docs = {}
    for path in sorted(set(K8S.glob("*.yaml")) - {K8S / "kustomization.yaml"}):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = {**doc, "_file": path.name}
    return docs


def pod_specs(manifests):
    for (kind, name), doc in manifests.items():
        if kind in ("Deployment", "Job"):
            yield name, doc["spec"]["template"]["spec"]


def test_kustomization_lists_every_manifest_but_the_secret_template(manifests):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files - {"secret.example.yaml"}
    assert not any(doc["kind"] == "Secret" for doc in manifests.values() if doc["_file"] in kustomization["resources"])


def test_web_deployment_probes_service_ingress_hpa(manifests):
    web = manifests[("Deployment", "idp-web")]
    container = web["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"name": "http", "containerPort": 8000} in container["ports"]
    assert "replicas" not in web["spec"]  # the HPA owns it
    assert web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = manifests[("HorizontalPodAutoscaler", "idp-web")]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "idp-web"}
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    service = manifests[("Service", "idp-web")]
    assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
    ingress = manifests[("Ingress", "idp")]
    assert ingress["spec"]["tls"] and ingress["spec"]["tls"][0]["secretName"]
    backends = {p["path"]: p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]}
    assert backends == {"/": "idp-web", "/static/": "idp-static"}
    assert manifests[("PodDisruptionBudget", "idp-web")]["spec"]["minAvailable"] >= 1


def test_every_container_has_resources_and_runs_as_non_root(manifests):
    for name, spec in pod_specs(manifests):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] >= 1000, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], where
            assert resources["limits"]["memory"], where
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where


def test_secrets_are_referenced_never_inlined(manifests):
    uses_oidc_key = 0
    for name, spec in pod_specs(manifests):
        for container in spec["containers"]:
            for var in container.get("env", []):
                if var["name"] in SECRET_ENV:
                    assert "value" not in var and var["valueFrom"]["secretKeyRef"]["name"] == "idp-secrets", name
        secret_volumes = [v for v in spec.get("volumes", []) if "secret" in v]
        for volume in secret_volumes:
            assert volume["secret"]["secretName"] == "idp-secrets"
            assert volume["secret"]["items"] == [{"key": "oidc-rsa-key", "path": "oidc_rsa.pem"}]
            uses_oidc_key += 1
    assert uses_oidc_key == 4  # web, worker, beat, migrate: production settings need the key
    config = manifests[("ConfigMap", "idp-config")]["data"]
    assert not SECRET_ENV & set(config) and config["OIDC_KEY_PATH"] == "/run/secrets/idp/oidc_rsa.pem"
    assert config["IDP_PRODUCTION"] == "1"
    template = manifests[("Secret", "idp-secrets")]
    assert set(template["stringData"]) == {"secret-key", "database-url", "metrics-token", "oidc-rsa-key"}
    assert all(value.strip().startswith("<REPLACE") for value in template["stringData"].values())


def test_beat_is_a_single_replica_and_says_why(manifests):
    beat = manifests[("Deployment", "idp-beat")]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}
    assert "beat" in beat["spec"]["template"]["spec"]["containers"][0]["command"]
    assert not any(
        doc["kind"] == "HorizontalPodAutoscaler" and doc["spec"]["scaleTargetRef"]["name"] == "idp-beat"
        for doc in manifests.values()
    )
    assert "SINGLETON REQUIREMENT" in (K8S / "beat.yaml").read_text()
    worker = manifests[("Deployment", "idp-worker")]
    assert "worker" in worker["spec"]["template"]["spec"]["containers"][0]["command"]


def test_migrate_job(manifests):
    job = manifests[("Job", "idp-migrate")]
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 1
    assert spec["containers"][0]["command"][-2:] == ["migrate", "--noinput"]


def test_one_image_everywhere(manifests):
    containers = [c for _, spec in pod_specs(manifests) for c in spec.get("initContainers", []) + spec["containers"]]
    images = {c["image"] for c in containers if "nginx" not in c["image"]}
    assert images == {"registry.example.com/idp:0.1.0"}


# --- nginx ---------------------------------------------------------------------------------


def nginx_blocks(text: str) -> list[str]:
    """Structural parse: statements end with ';' or open/close blocks; braces balance."""
    depth, statement, statements = 0, "", []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip() if not line.strip().startswith(("'", '"')) else line.strip()
        for char in line + " ":
            if char == "{":
                depth += 1
                statements.append(statement.strip() + " {")
                statement = ""
            elif char == "}":
                assert not statement.strip(), f"unterminated statement before '}}': {statement!r}"
                depth -= 1
                assert depth >= 0
                statements.append("}")
            elif char == ";":
                statements.append(statement.strip() + ";")
                statement = ""
            else:
                statement += char
    assert depth == 0 and not statement.strip(), "unbalanced braces or unterminated statement"
    return statements


@pytest.mark.parametrize("name", ["idp.conf", "compose.conf"])
def test_nginx_config_structure(name):
    text = (DEPLOY / "nginx" / name).read_text()
    statements = nginx_blocks(text)
    joined = "\n".join(statements)
    formats = re.findall(r"log_format\s+(\w+)\s+(.*?);", joined, re.S)
    assert formats
    for _, fmt in formats:
        for leaky in (
            "$request ",
            '$request"',
            "$request_uri",
            "$args",
            "$query_string",
            "$http_referer",
            "$arg_",
            "$http_authorization",
            "$http_cookie",
        ):
            assert leaky not in fmt, f"{name}: the log format prints {leaky.strip()}"
    access_logs = re.findall(r"access_log\s+(\S+)(?:\s+(\w+))?;", joined)
    assert access_logs and all(fmt == "idp_redacted" for path, fmt in access_logs if path != "off")
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in joined
    assert "proxy_set_header Host $host;" in joined
    assert "non_idempotent" not in joined  # a POST (a hop) that reached a replica is never re-sent
    assert re.search(r"location = /metrics \{\s*return 404;", joined)
    assert re.search(r"listen 443 ssl", joined) and "ssl_certificate " in joined
    assert re.search(r"return 301 https://\$host\$request_uri;", joined)
    assert "location /static/ {" in joined


def nginx_binary():
    return (
        os.environ.get("NGINX")
        or shutil.which("nginx")
        or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    )


@pytest.mark.skipif(not nginx_binary(), reason="nginx not installed: the structural test above covers the syntax")
@pytest.mark.parametrize("name", ["idp.conf", "compose.conf"])
def test_nginx_t_accepts_the_config(name, tmp_path):
    nginx = nginx_binary()
    version = re.search(
        r"nginx/(\d+)\.(\d+)\.(\d+)", subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr
    )
    text = (DEPLOY / "nginx" / name).read_text()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
            "-days",
            "1",
            "-subj",
            "/CN=idp.example.com",
        ],
        check=True,
        capture_output=True,
    )
    (tmp_path / "static").mkdir()
    for old, new in (
        ("/etc/letsencrypt/live/idp.example.com/fullchain.pem", tmp_path / "cert.pem"),
        ("/etc/letsencrypt/live/idp.example.com/privkey.pem", tmp_path / "key.pem"),
        ("/etc/nginx/certs/fullchain.pem", tmp_path / "cert.pem"),
        ("/etc/nginx/certs/privkey.pem", tmp_path / "key.pem"),
        ("/var/log/nginx/", f"{tmp_path}/"),
        ("/srv/idp/static/", f"{tmp_path}/static/"),
        ("/srv/static/", f"{tmp_path}/static/"),
        ("server web:8000", "server 127.0.0.1:8000"),
    ):
        text = text.replace(old, str(new))
    if version and tuple(map(int, version.groups())) < (1, 27, 3):
        # compose.conf targets nginx:1.28 (upstream "resolve", "http2 on"); older nginx checks the rest.
        text = text.replace(" resolve ", " ").replace("    http2 on;\n", "")
    (tmp_path / "site.conf").write_text(text)
    temp = " ".join(f"{d}_temp_path {tmp_path}/{d};" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ {temp} include {tmp_path}/site.conf; }}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and "test is successful" in result.stderr, result.stderr


def test_nginx_upstreams_match_the_systemd_instances():
    upstream = set(re.findall(r"server 127\.0\.0\.1:(\d+)", (DEPLOY / "nginx" / "idp.conf").read_text()))
    wanted = set(re.findall(r"idp-web@(\d+)\.service", (DEPLOY / "systemd" / "idp.target").read_text()))
    assert upstream == wanted == {"8000", "8001"}


# --- systemd ----------------------------------------------------------------------------------


UNITS = sorted(p.name for p in (DEPLOY / "systemd").iterdir() if p.suffix in (".service", ".target"))


def unit_sections(name: str) -> dict[str, list[tuple[str, str]]]:
    sections, current = {}, None
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{name}: {line!r} is not key=value inside a section"
        current.append((key.strip(), value.strip()))
    return sections


@pytest.mark.parametrize("name", UNITS)
def test_systemd_unit_structure(name):
    sections = unit_sections(name)
    assert "Unit" in sections and "Install" in sections
    if name.endswith(".target"):
        return
    service = dict(sections["Service"])
    values = sections["Service"]
    assert service["User"] == "idp" and service["WorkingDirectory"] == "/srv/idp"
    assert all(v.split()[0].startswith("/") for k, v in values if k == "ExecStart")
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert not any(
        k == "Environment" and re.search(r"\b(SECRET_KEY|DATABASE_URL|METRICS_TOKEN)=", v) for k, v in values
    ), "a secret in the unit"
    credentials = {v.split(":", 1)[0] for k, v in values if k == "LoadCredential"}
    assert {"secret_key", "oidc_rsa.pem", "database_url"} <= credentials
    assert all(v.split(":", 1)[1].startswith("/etc/idp/") for k, v in values if k == "LoadCredential")


def test_systemd_web_worker_beat():
    web = dict(unit_sections("idp-web@.service")["Service"])
    assert web["Type"] == "notify" and "gunicorn.conf.py" in web["ExecStart"]
    envs = [v for k, v in unit_sections("idp-web@.service")["Service"] if k == "Environment"]
    assert "GUNICORN_BIND=127.0.0.1:%i" in envs
    assert "Requires" in dict(unit_sections("idp-web@.service")["Unit"])
    assert "worker" in dict(unit_sections("idp-worker.service")["Service"])["ExecStart"]
    beat = (DEPLOY / "systemd" / "idp-beat.service").read_text()
    assert "EXACTLY ONE beat" in beat and " beat " in dict(unit_sections("idp-beat.service")["Service"])["ExecStart"]
    assert dict(unit_sections("idp-migrate.service")["Service"])["Type"] == "oneshot"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed (structural tests ran)")
def test_systemd_analyze_verify(tmp_path):
    """The units as installed, with /srv/idp pointing at this checkout so ExecStart exists."""
    venv_bin = Path(sys.executable).parent
    for name in UNITS:
        text = (DEPLOY / "systemd" / name).read_text()
        text = text.replace("/srv/idp/.venv/bin/", f"{venv_bin}/").replace("/srv/idp", str(REPO))
        (tmp_path / name).write_text(text)
    targets = [str(tmp_path / n) for n in UNITS if "@" not in n] + [str(tmp_path / "idp-web@8000.service")]
    result = subprocess.run(
        ["systemd-analyze", "verify", *targets], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 0 and not problems, "\n".join(problems)


# --- docs --------------------------------------------------------------------------------------


def test_deploy_doc_covers_the_operator_topics():
    text = (REPO / "docs" / "deploy.md").read_text()
    for topic in (
        "## One host",
        "## Kubernetes",
        "## Sizing",
        "## Backups",
        "METRICS_TOKEN",
        "/readyz",
        "check --deploy",
        "scripts/cluster.py",
        "bench/cluster.py",
    ):
        assert topic in text, topic
    assert "CLUSTER_FIGURES" not in text and "BENCH_FIGURES" not in text  # the measured figures are filled in
