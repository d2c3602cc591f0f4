"""idp_project's own data: the answers the demo agents publish (``idp_project.answers``).

An answer keeps a *snapshot* of the chain it was published from (chain id, step,
depth, the actors from the root down and RFC 8693 ``act``), so it stays readable
after the chain is purged by housekeeping. Nothing here stores a code or a token.
"""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Answer(models.Model):
    text = models.TextField(_("text"))
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="answers",
        verbose_name=_("user"),
        help_text=_("The person the chain acts for."),
    )
    client_id = models.CharField(_("client id"), max_length=100)
    scope = models.TextField(_("token scope"))
    chain_id = models.UUIDField(_("chain id"))
    step_id = models.UUIDField(_("step"), help_text=_("The step whose code was exchanged for the token."))
    chain_depth = models.PositiveIntegerField(_("chain depth"))
    actors = models.JSONField(
        _("actors"),
        default=list,
        help_text=_('From the root down to the publishing step: [{"kind", "actor", "scope"}, …].'),
    )
    act = models.JSONField(_("act claim"), null=True, blank=True, help_text=_("RFC 8693 §4.1, as in introspection."))
    created = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("answer")
        verbose_name_plural = _("answers")
        ordering = ("-created", "-pk")
        indexes = [models.Index(fields=("chain_id",), name="idp_answer_chain")]

    def __str__(self) -> str:
        return f"answer {self.pk} (chain {self.chain_id})"
