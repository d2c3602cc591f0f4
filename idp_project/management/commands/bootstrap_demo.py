"""Demo data for idp_project (idempotent): an admin, a demo user, a confidential
client allowed to use code_chain, and the seven example agents with their keys.

The client authenticates with its own key pair (private_key_jwt, RFC 7523): its public
key is registered and, when the client first gets it, key-only (its secret is refused).
``--secret`` lets it use its secret as well (scripts/agent_chat.py --client-secret-auth),
``--key-only`` goes back; later runs without either keep the client as it is.

Secrets and private keys are generated on first run and kept under var/ (mode 0600;
var/ is never committed); later runs print the same ones.
"""

import json
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from django.core.management.base import BaseCommand
from jwcrypto import jwk
from oauth2_provider.models import get_application_model

from chain_grant.client import generate_key
from chain_grant.core import agents, client_auth
from chain_grant.models import ChainClient

CLIENT_ID = "chain-demo"
CLIENT_KEY = Path("clients") / f"{CLIENT_ID}.json"  # under VAR_DIR: the client's private key (ES256)
REDIRECT_URIS = "http://127.0.0.1:8765/oauth-callback http://127.0.0.1:8000/oauth-callback"
ROOT_SCOPES = "openid profile read write"
AGENTS = {
    "planner": "openid profile read write",
    "researcher": "openid read",
    "security": "openid read",
    "implementer": "openid read write",
    "merger": "openid read write",
    "critic": "openid read",
    "writer": "openid profile email write",
}


def _write_private(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # before writing: the file may have existed with wider permissions
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)


class Command(BaseCommand):
    help = "Create the demo admin, user, client and the seven example agents (idempotent)."

    def add_arguments(self, parser):
        auth = parser.add_mutually_exclusive_group()
        auth.add_argument(
            "--secret",
            action="store_true",
            help="Let the demo client authenticate with its secret too, not only its key (private_key_jwt).",
        )
        auth.add_argument(
            "--key-only",
            action="store_true",
            help="The demo client authenticates with its key only, its secret refused (what a new client gets).",
        )

    def handle(self, *args, **options):
        var = Path(settings.VAR_DIR)
        creds_path = var / "demo_credentials.json"
        creds = json.loads(creds_path.read_text()) if creds_path.exists() else {}
        for name in ("admin_password", "alice_password", "client_secret"):
            creds.setdefault(name, secrets.token_urlsafe(18))
        creds.update(client_id=CLIENT_ID, redirect_uri=REDIRECT_URIS.split()[0], scope=ROOT_SCOPES)
        creds.update(client_key=str(CLIENT_KEY))  # the client's private key, relative to this directory
        _write_private(creds_path, creds)

        admin = self._user(
            "admin user", "admin", creds["admin_password"], is_staff=True, is_superuser=True, email="admin@example.com"
        )
        self._user("demo user", "alice", creds["alice_password"], email="alice@example.com", first_name="Alice")

        Application = get_application_model()
        app = Application.objects.filter(client_id=CLIENT_ID).first()
        created = app is None
        if created:
            app = Application.objects.create(
                name="chain_grant demo client",
                client_id=CLIENT_ID,
                client_secret=creds["client_secret"],
                client_type=Application.CLIENT_CONFIDENTIAL,
                authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
                redirect_uris=REDIRECT_URIS,
                algorithm=Application.RS256_ALGORITHM,
                user=admin,
            )
        elif not check_password(creds["client_secret"], app.client_secret):
            app.client_secret = creds["client_secret"]  # keep the printed secret true (hashed on save)
            app.save(update_fields=["client_secret"])
        chain_client, _ = ChainClient.objects.update_or_create(application=app, defaults={"code_chain_enabled": True})
        self._say("confidential client (code_chain enabled)", CLIENT_ID, created)
        client_key_path = var / CLIENT_KEY
        if not client_key_path.exists():
            _write_private(client_key_path, generate_key("EC").export(as_dict=True, private_key=True))
        public = jwk.JWK(**json.loads(client_key_path.read_text())).export_public()
        if options["secret"]:
            key_only = False
        elif options["key_only"] or not client_auth.client_keys(chain_client):
            key_only = True  # what a client gets with its first key
        else:
            key_only = None  # as it is
        chain_client = client_auth.register_keys(app, public, replace=True, key_only=key_only)  # the key on disk only
        key_only = chain_client.token_endpoint_auth_method == ChainClient.AuthMethod.PRIVATE_KEY_JWT
        auth = "private_key_jwt only, its secret refused" if key_only else "private_key_jwt or its secret"
        self.stdout.write(f"         client authentication: {auth}; private key {client_key_path}")

        for name, scopes in AGENTS.items():
            key_path = var / "agents" / f"{name}.json"
            created = not key_path.exists()
            if created:
                _write_private(key_path, generate_key("RSA").export(as_dict=True, private_key=True))
            private = json.loads(key_path.read_text())
            public = json.dumps({k: v for k, v in private.items() if k in ("kty", "n", "e", "kid")})
            agent = agents.register_agent(name, public, [app], scopes, name=name)
            agents.rotate_keys(agent, public)  # only the key on disk stays active
            self._say(f"agent (scopes: {scopes}; private key {key_path})", name, created)

        self.stdout.write("")
        self.stdout.write(f"Credentials (mode 0600): {creds_path}")
        self.stdout.write(f"  admin / {creds['admin_password']}   alice / {creds['alice_password']}")
        secret_note = "  (refused: key-only; `bootstrap_demo --secret` lets the client use it)" if key_only else ""
        self.stdout.write(f"  client_id {CLIENT_ID}  client_secret {creds['client_secret']}{secret_note}")

    def _user(self, what, username, password, **fields):
        """Create the demo user, or reset its password to the saved one."""
        user, created = get_user_model().objects.get_or_create(username=username, defaults=fields)
        if created or not user.check_password(password):
            user.set_password(password)
            user.save(update_fields=["password"])
        self._say(what, username, created)
        return user

    def _say(self, what, name, created):
        self.stdout.write(f"{'created' if created else 'exists '}  {what}: {name}")
