"""Switch OAuth clients (DOT applications) on or off for chains without the admin.

manage.py chain_grant_client enable CLIENT_ID [--no-wallet] [--poc]
manage.py chain_grant_client disable CLIENT_ID            (ON_DISABLE applies: "revoke" revokes its chains)
manage.py chain_grant_client list
manage.py chain_grant_client keys add CLIENT_ID --key FILE [--key-only | --secret-too]
manage.py chain_grant_client keys rotate CLIENT_ID --key FILE [--key-only | --secret-too]
manage.py chain_grant_client keys list CLIENT_ID
"""

from django.core.management.base import BaseCommand, CommandError
from oauth2_provider.models import get_application_model

from chain_grant.core import client_auth, policy
from chain_grant.models import ChainClient


class Command(BaseCommand):
    help = "Enable, disable and list the clients that may use authorization code chains."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        enable = sub.add_parser("enable", help="Let a client use code_chain and the browser steps.")
        enable.add_argument("client_id")
        enable.add_argument(
            "--wallet",
            action="store_true",
            default=None,
            help="response_type=id_token at authorize is its wallet step (the default for a new client).",
        )
        enable.add_argument(
            "--no-wallet",
            dest="wallet",
            action="store_false",
            help="Keep DOT's OIDC implicit flow for its response_type=id_token.",
        )
        enable.add_argument(
            "--poc",
            action="store_true",
            default=None,
            help="PoC compatibility (only with CHAIN_GRANT['RELAXED_PROOFS']; never in production).",
        )
        enable.add_argument("--no-poc", dest="poc", action="store_false", help="Strict requests only (default).")
        disable = sub.add_parser("disable", help="Stop a client's chains (ON_DISABLE: revoke or refuse).")
        disable.add_argument("client_id")
        sub.add_parser("list", help="Each client with its chain switches.")
        keys = sub.add_parser("keys", help="A client's private_key_jwt keys (RFC 7523 §2.2).")
        keys_sub = keys.add_subparsers(dest="keys_action", required=True)
        for name, text in (("add", "Add public keys."), ("rotate", "Replace all keys with these.")):
            parser_ = keys_sub.add_parser(name, help=text)
            parser_.add_argument("client_id")
            parser_.add_argument("--key", required=True, help="A public JWK, JWKS or PEM file.")
            parser_.add_argument(
                "--key-only", dest="key_only", action="store_true", default=None, help="Refuse its secret from now on."
            )
            parser_.add_argument("--secret-too", dest="key_only", action="store_false", help="Accept its secret too.")
        listing = keys_sub.add_parser("list", help="The client's keys (kid, kty, alg) and whether its secret works.")
        listing.add_argument("client_id")

    def handle(self, *args, action, **options):
        return getattr(self, f"do_{action}")(**options)

    def _application(self, client_id):
        application = get_application_model().objects.filter(client_id=client_id).first()
        if application is None:
            raise CommandError(f"No application with client_id {client_id!r}.")
        return application

    def do_enable(self, client_id, wallet=None, poc=None, **_):
        application = self._application(client_id)
        if not application.allows_grant_type(application.GRANT_AUTHORIZATION_CODE):
            raise CommandError(f"{client_id} is not an authorization-code client: chains start with a code.")
        switches = {"code_chain_enabled": True, "wallet_step": wallet, "poc_compatible": poc}
        row = policy.configure_client(application, **{k: v for k, v in switches.items() if v is not None})
        self.stdout.write(self._line(row))

    def do_disable(self, client_id, **_):
        self.stdout.write(self._line(policy.configure_client(self._application(client_id), code_chain_enabled=False)))

    def do_keys(self, keys_action, client_id, key=None, key_only=None, **_):
        application = self._application(client_id)
        if keys_action == "list":
            row = ChainClient.objects.filter(application=application).first()
            method = row.token_endpoint_auth_method if row else ""
            self.stdout.write(f"{client_id}\tauth={method or 'secret+keys'}")
            for k in client_auth.client_keys(row):
                self.stdout.write(f"  {k.get('kid')}\t{k.get('kty')}\t{k.get('crv', k.get('alg', ''))}")
            return
        try:
            with open(key, encoding="utf-8") as handle:
                text = handle.read()
            row = client_auth.register_keys(application, text, replace=keys_action == "rotate", key_only=key_only)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        kids = ", ".join(k["kid"] for k in client_auth.client_keys(row))
        self.stdout.write(f"{client_id}: keys {kids}; auth={row.token_endpoint_auth_method or 'secret+keys'}")

    def do_list(self, **_):
        rows = {row.application_id: row for row in ChainClient.objects.select_related("application")}
        for application in get_application_model().objects.order_by("client_id"):
            row = rows.get(application.pk)
            if row is None:
                self.stdout.write(
                    f"{application.client_id}\tchains={'on' if policy.client_may_chain(application) else 'off'}"
                )
            else:
                self.stdout.write(self._line(row))

    @staticmethod
    def _line(row: ChainClient) -> str:
        switches = (
            f"chains={'on' if policy.client_may_chain(row.application) else 'off'}",
            f"wallet={'on' if policy.wallet_step_client(row.application) else 'off'}",
            f"poc={'on' if row.poc_compatible else 'off'}",
        )
        return "\t".join((row.application.client_id, *switches))
