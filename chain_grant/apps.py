from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChainGrantConfig(AppConfig):
    name = "chain_grant"
    verbose_name = _("Authorization code chains")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import checks, receivers  # noqa: F401  (registers the system checks)

        receivers.connect()
