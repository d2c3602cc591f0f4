from django.core.management.base import BaseCommand, CommandError


class HousekeepingCommand(BaseCommand):
    """Shared shape of the housekeeping commands: --batch-size, --dry-run, print counts.
    For IdPs that run cron instead of Celery."""

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, help="Rows per transaction (default from CHAIN_GRANT).")
        parser.add_argument("--dry-run", action="store_true", help="Count only; change nothing.")

    def handle(self, *args, batch_size=None, dry_run=False, **options):
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        self.stdout.write(self.run(batch_size=batch_size, dry_run=dry_run, **options))

    def run(self, batch_size, dry_run, **options) -> str:
        raise NotImplementedError
