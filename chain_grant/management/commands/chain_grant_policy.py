"""Export and import hand-off policies as JSON (docs/policy.md).

manage.py chain_grant_policy export [CLIENT_ID] > policy.json
manage.py chain_grant_policy import policy.json     (validated, all or nothing; "-" reads stdin)
"""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from chain_grant.core import handoff


class Command(BaseCommand):
    help = "Export or import the hand-off policies (the default and per client) as JSON."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="Print the policies (or one client's) as JSON.")
        export.add_argument("client_id", nargs="?", help="Only this client's policy.")
        load = sub.add_parser("import", help="Replace the policies a file names (others are kept).")
        load.add_argument("file", help='A file written by export, or "-" for stdin.')

    def handle(self, *args, action, client_id=None, file=None, **options):
        if action == "export":
            self.stdout.write(json.dumps(handoff.export_policies(client_id), indent=2, sort_keys=True))
            return
        try:
            if file == "-":
                data = json.load(sys.stdin)
            else:
                with open(file, encoding="utf-8") as handle:
                    data = json.load(handle)
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc}") from None
        except ValueError as exc:
            raise CommandError(f"{file} is not JSON: {exc}") from None
        try:
            rows = handoff.import_policies(data)
        except handoff.PolicyError as exc:
            raise CommandError(f"{file}: {exc} Nothing was imported.") from None
        self.stdout.write(f"Imported {len(rows)} polic{'y' if len(rows) == 1 else 'ies'}.")
