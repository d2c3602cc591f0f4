"""Settings for a Celery worker subprocess in the fault tests: idp_project's, with
unacknowledged messages restored within seconds instead of the production minutes."""

from tests.settings import *  # noqa: F403

CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 2,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
