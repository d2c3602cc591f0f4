"""Register agents and manage their keys without the admin.

manage.py chain_grant_agent keygen planner [--kty EC] [--public planner.pub.jwk]
manage.py chain_grant_agent add planner --key planner.pub.jwk --application CLIENT_ID --scopes "openid read"
manage.py chain_grant_agent list
manage.py chain_grant_agent rotate planner --key planner-2026.pub.pem
manage.py chain_grant_agent disable planner [--kid=KID]   (write --kid=…: thumbprints may start with "-")
manage.py chain_grant_agent enable planner
"""

import json
import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from oauth2_provider.models import get_application_model

from chain_grant.client import generate_key
from chain_grant.core import agents
from chain_grant.models import Agent


class Command(BaseCommand):
    help = "Add, list, disable, enable and rotate keys of chain_grant agents."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        gen = sub.add_parser("keygen", help="Make an agent key pair: NAME.key.pem (mode 0600) and its public JWK.")
        gen.add_argument("identifier", metavar="NAME")
        gen.add_argument("--kty", choices=("EC", "RSA", "OKP"), default="EC", help="EC P-256 (default), RSA, Ed25519.")
        gen.add_argument("--private", help="Private key file (default: NAME.key.pem); never overwritten.")
        gen.add_argument("--public", help="Write the public JWK here (default: stdout).")
        add = sub.add_parser("add", help="Register an agent (or add keys/applications to one).")
        add.add_argument("identifier", help="The `sub` the agent signs proofs with.")
        add.add_argument("--key", required=True, help="Public JWK, JWKS or PEM file.")
        add.add_argument("--application", action="append", default=[], metavar="CLIENT_ID", required=True)
        add.add_argument("--scopes", help="Space-separated allowed scopes (kept if omitted for an existing agent).")
        add.add_argument("--algorithms", help="Comma-separated JWS algorithms (default: the global allow-list).")
        add.add_argument("--name")
        lst = sub.add_parser("list", help="List agents and their keys.")
        lst.add_argument("--application", metavar="CLIENT_ID")
        rot = sub.add_parser("rotate", help="Add new key(s), disable the others.")
        rot.add_argument("identifier")
        rot.add_argument("--key", required=True)
        dis = sub.add_parser("disable", help="Disable an agent, or one key with --kid.")
        dis.add_argument("identifier")
        dis.add_argument("--kid", help="Key id; write --kid=KID (thumbprints may start with '-').")
        ena = sub.add_parser("enable", help="Re-activate an agent.")
        ena.add_argument("identifier")

    def handle(self, *args, action, **options):
        return getattr(self, f"do_{action}")(**options)

    def _agent(self, identifier):
        try:
            return Agent.objects.get(identifier=identifier)
        except Agent.DoesNotExist:
            raise CommandError(f"No agent {identifier!r}.") from None

    def _read_key(self, path):
        try:
            return Path(path).read_text()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from None

    def do_add(self, identifier, key, application, scopes, algorithms, name, **_):
        Application = get_application_model()
        apps = list(Application.objects.filter(client_id__in=application))
        missing = set(application) - {a.client_id for a in apps}
        if missing:
            raise CommandError(f"Unknown application(s): {', '.join(sorted(missing))}")
        try:
            algorithm_list = None if algorithms is None else [a.strip() for a in algorithms.split(",") if a.strip()]
            agent = agents.register_agent(identifier, self._read_key(key), apps, scopes, algorithm_list, name)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"agent {agent.identifier}: keys {', '.join(agent.keys.values_list('kid', flat=True))}")

    def do_keygen(self, identifier, kty, private=None, public=None, **_):
        key = generate_key(kty)
        path = Path(private or f"{identifier}.key.pem")
        try:  # O_EXCL: an existing key is never replaced; 0600 from the first byte
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise CommandError(f"Cannot create {path}: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_to_pem(private_key=True, password=None))
        jwk_text = json.dumps(key.export_public(as_dict=True), indent=2)
        if public:
            Path(public).write_text(jwk_text + "\n")
            self.stderr.write(f"public JWK of {identifier} written to {public}")
        else:
            self.stdout.write(jwk_text)
        self.stderr.write(
            f"private key written to {path} (mode 0600); register the public key with: "
            f"manage.py chain_grant_agent add {identifier} --key {public or 'PUBLIC.jwk'} --application CLIENT_ID"
        )

    def do_list(self, application=None, **_):
        qs = Agent.objects.prefetch_related("keys", "applications")
        if application:
            qs = qs.filter(applications__client_id=application)
        for agent in qs:
            state = "active" if agent.is_active else "disabled"
            clients = ",".join(a.client_id for a in agent.applications.all())
            self.stdout.write(f"{agent.identifier}\t{state}\tscopes={agent.allowed_scopes!r}\tclients={clients}")
            for k in agent.keys.all():
                self.stdout.write(f"    {k.kid}\t{k.jwk.get('kty')}\t{'active' if k.is_active else 'disabled'}")

    def do_rotate(self, identifier, key, **_):
        agent = self._agent(identifier)
        try:
            new, disabled = agents.rotate_keys(agent, self._read_key(key))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"agent {identifier}: added {', '.join(k.kid for k in new)}; disabled {disabled} key(s)")

    def do_disable(self, identifier, kid=None, **_):
        count = agents.disable(self._agent(identifier), kid)
        if kid and not count:
            raise CommandError(f"Agent {identifier!r} has no active key {kid!r}.")
        self.stdout.write(f"disabled {count} {'key' if kid else 'agent'}")

    def do_enable(self, identifier, **_):
        Agent.objects.filter(pk=self._agent(identifier).pk).update(is_active=True)
        self.stdout.write(f"enabled agent {identifier}")
