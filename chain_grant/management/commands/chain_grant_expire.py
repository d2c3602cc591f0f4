from chain_grant.core import retention
from chain_grant.housekeeping.commands import HousekeepingCommand


class Command(HousekeepingCommand):
    help = "Mark expired chain steps and delete their DOT grant rows (what the Celery task does)."

    def run(self, batch_size, dry_run, **options):
        result = retention.expire_steps(batch_size=batch_size, dry_run=dry_run)
        verb = "would mark" if dry_run else "marked"
        return f"{verb} {result.steps} step(s) expired; {result.grants} DOT grant row(s) deleted" + (
            "" if dry_run else f" in {result.batches} batch(es)"
        )
