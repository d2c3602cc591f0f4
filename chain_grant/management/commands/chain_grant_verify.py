import json
import uuid

from django.core.management.base import BaseCommand, CommandError

from chain_grant.core import integrity
from chain_grant.review import evidence


class Command(BaseCommand):
    help = (
        "Verify chains against their signed record (link hashes, signatures, joins, events, head) and, with "
        "--against, against an earlier export. Prints each problem with the step it names; exits 1 if any."
    )

    def add_arguments(self, parser):
        parser.add_argument("chain_id", nargs="+", help="Chain ids (the root step's id, as the API shows it).")
        parser.add_argument(
            "--against",
            metavar="FILE",
            help="An evidence bundle ({evidence, jws}) or tree JSON exported earlier, for one chain.",
        )

    def handle(self, *args, chain_id, against=None, **options):
        chain_ids = chain_id
        exported = _load_export(against) if against else None
        if exported is not None and len(chain_ids) != 1:
            raise CommandError("--against compares one chain: give one chain id.")
        failed = False
        for given in chain_ids:
            try:
                root = uuid.UUID(given)
            except ValueError:
                raise CommandError(f"{given!r} is not a chain id.") from None
            steps = evidence.load_steps(root)
            if not steps:
                raise CommandError(f"No chain {given}.")
            head = integrity.head_of(steps)
            verification = integrity.verify_steps(steps, head=head)
            found = list(verification.problems)
            if exported is not None:
                found += integrity.compare_with_export(exported, steps, head)
            failed = failed or bool(found)
            self.stdout.write(f"chain {root}: {verification.checked} step(s) checked, {len(found)} problem(s)")
            for problem in found:
                self.stdout.write(f"  {problem['step'] or 'chain'}: {problem['problem']}")
        if failed:
            raise SystemExit(1)


def _load_export(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CommandError(f"Cannot read {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("evidence"), dict):
        if not evidence.bundle_verifies(data):
            raise CommandError(f"{path}: the evidence bundle's signature does not verify with this IdP's OIDC key.")
        data = data["evidence"]
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        raise CommandError(f"{path} is not an evidence bundle or a chain tree export.")
    return data
