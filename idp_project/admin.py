"""The demo's answers in the admin: read-only, each linked to its chain's page."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from .models import Answer


@admin.register(Answer)
class AnswerAdmin(admin.ModelAdmin):
    list_display = ("id", "short_text", "user", "client_id", "chain_link", "chain_depth", "created")
    list_filter = ("client_id", "created")
    search_fields = ("=chain_id", "user__username", "text")
    readonly_fields = (
        "text",
        "user",
        "client_id",
        "scope",
        "chain_link",
        "step_id",
        "chain_depth",
        "actors",
        "act",
        "created",
    )
    exclude = ("chain_id",)

    @admin.display(description=_("text"))
    def short_text(self, obj):
        return obj.text if len(obj.text) <= 80 else obj.text[:79] + "…"

    @admin.display(description=_("chain"), ordering="chain_id")
    def chain_link(self, obj):
        url = reverse("admin:chain_grant_chain_tree", args=[obj.chain_id])
        return format_html('<a href="{}">{}</a>', url, obj.chain_id)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
