"""Admin screens (basic; review screens and revoke actions build on these)."""

from django.contrib import admin

from .models import Agent, AgentKey, ChainClient, ChainedGrant


class AgentKeyInline(admin.TabularInline):
    model = AgentKey
    extra = 0
    fields = ("kid", "is_active", "created", "disabled_at")
    readonly_fields = ("kid", "created", "disabled_at")
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("identifier", "name", "is_active", "self_asserted", "allowed_scopes", "created")
    list_filter = ("is_active", "self_asserted")
    search_fields = ("identifier", "name")
    filter_horizontal = ("applications",)
    inlines = (AgentKeyInline,)


@admin.register(ChainClient)
class ChainClientAdmin(admin.ModelAdmin):
    list_display = ("application", "code_chain_enabled")
    raw_id_fields = ("application",)


@admin.register(ChainedGrant)
class ChainedGrantAdmin(admin.ModelAdmin):
    list_display = ("short_digest", "kind", "subject", "depth", "application", "scope", "created", "expires")
    list_filter = ("kind", "application")
    list_select_related = ("application",)
    search_fields = ("subject", "=root__id")
    readonly_fields = [f.name for f in ChainedGrant._meta.fields if f.name != "code_digest"]
    exclude = ("code_digest",)

    @admin.display(description="code digest")
    def short_digest(self, obj):
        return obj.code_digest[:8] + "…"

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
