from chain_grant.core import retention
from chain_grant.housekeeping.commands import HousekeepingCommand


class Command(HousekeepingCommand):
    help = "Delete whole chains whose every step ended more than RETENTION_DAYS ago."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--retention-days", type=int, help="Override CHAIN_GRANT['RETENTION_DAYS'].")

    def run(self, batch_size, dry_run, retention_days=None, **options):
        result = retention.purge_chains(batch_size=batch_size, dry_run=dry_run, retention_days=retention_days)
        verb = "would delete" if dry_run else "deleted"
        return f"{verb} {result.chains} chain(s), {result.steps} step(s)"
