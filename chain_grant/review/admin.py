"""Admin screens: chains and steps to review (a tree, integrity, evidence export),
revoking a subtree behind a permission and a confirmation page, and agents with
their keys. Codes are never shown, only a digest prefix; no step can be added or
edited by hand. Hand-off policies (core.handoff) are edited here, validated by the rules."""

from __future__ import annotations

import json
from typing import ClassVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.http import Http404, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from oauth2_provider.settings import oauth2_settings

from ..core import agents, handoff, lifecycle, proofs
from ..models import (
    STEP_STATES,
    Agent,
    AgentKey,
    Chain,
    ChainClient,
    ChainedGrant,
    HandoffPolicy,
    Wallet,
    WalletRequest,
)
from ..settings import chain_grant_settings
from . import evidence as review

REVOKE_PERMISSION = "chain_grant.revoke_chainedgrant"
KIND_COLOURS = {"wallet": "#6f42c1", "user": "#1864ab", "agent": "#2b8a3e"}
STATE_COLOURS = {
    "live": "#2b8a3e",
    "handed_off": "#1864ab",
    "exchanged": "#495057",
    "expired": "#868e96",
    "revoked": "#c92a2a",
}


def badge(text: str, colour: str):
    return format_html(
        '<span style="background:{};color:#fff;border-radius:3px;padding:1px 6px;font-size:11px">{}</span>',
        colour,
        text,
    )


class StateFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [(state, _(state.replace("_", " "))) for state in STEP_STATES]

    def queryset(self, request, queryset):
        if self.value() in STEP_STATES:
            return queryset.in_state(self.value())
        return queryset


def refuse_nul_filters(request):
    """A NUL in a filter reaches the database through Django's own filters, and
    PostgreSQL refuses it (an HTTP 500): a 400 instead."""
    if any("\x00" in key + "".join(values) for key, values in request.GET.lists()):
        return HttpResponseBadRequest(_("NUL characters are not allowed in filters."))
    return None


class ReviewMixin(admin.ModelAdmin):
    """Read-only lists of steps, with the chain page, revoke and evidence views."""

    list_display: tuple[str, ...] = (
        "digest",
        "kind_badge",
        "actor",
        "application",
        "scope",
        "state_badge",
        "created",
        "expires",
        "chain_link",
    )
    list_filter: ClassVar[tuple[str | type, ...]] = ("kind", StateFilter, "application", "agent", "created")
    list_select_related = ("application", "agent", "user")
    search_fields: ClassVar[tuple[str, ...]] = ("subject", "agent__identifier", "=root__id", "user__username")
    search_help_text = _("Subject (user pk, DID, agent), agent, exact chain id, or username.")
    date_hierarchy = "created"
    exclude = ("code_digest",)

    @admin.display(description=_("code"))
    def digest(self, obj):
        return obj.code_digest[:8] + "…"

    @admin.display(description=_("kind"), ordering="kind")
    def kind_badge(self, obj):
        return badge(obj.kind, KIND_COLOURS.get(obj.kind, "#495057"))

    @admin.display(description=_("actor"))
    def actor(self, obj):
        return review.actor_label(obj)

    @admin.display(description=_("state"))
    def state_badge(self, obj):
        return badge(obj.state, STATE_COLOURS[obj.state])

    @admin.display(description=_("chain"))
    def chain_link(self, obj):
        url = reverse("admin:chain_grant_chain_tree", args=[obj.root_id])
        return format_html('<a href="{}">{}…</a>', url, str(obj.root_id)[:8])

    def changelist_view(self, request, extra_context=None):
        return refuse_nul_filters(request) or super().changelist_view(request, extra_context)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in ChainedGrant._meta.fields if f.name != "code_digest"]


class ChainAgentFilter(admin.SimpleListFilter):
    """Chains in which an agent acted (roots are never agent steps)."""

    title = _("agent")
    parameter_name = "agent"

    def lookups(self, request, model_admin):
        return list(Agent.objects.values_list("pk", "identifier"))

    def queryset(self, request, queryset):
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(pk__in=ChainedGrant.objects.filter(agent_id=value).values("root_id"))
        return queryset


@admin.register(Chain)
class ChainAdmin(ReviewMixin, admin.ModelAdmin):
    """Chains (their roots). The chain page shows the whole tree."""

    list_display = ("chain_link", "kind_badge", "actor", "application", "scope", "state_badge", "created")
    list_filter = ("kind", StateFilter, "application", ChainAgentFilter, "created")
    search_fields = ("subject", "=id", "user__username")

    def get_search_results(self, request, queryset, search_term):
        """Also chains in which an agent with that identifier acted."""
        found, duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:
            found |= queryset.filter(
                Exists(ChainedGrant.objects.filter(root_id=OuterRef("pk"), agent__identifier=term))
            )
        return found, duplicates

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<uuid:chain_id>/tree/", view(self.tree_view), name="chain_grant_chain_tree"),
            path("<uuid:chain_id>/evidence/", view(self.evidence_view), name="chain_grant_chain_evidence"),
            path("revoke/<uuid:step_id>/", view(self.revoke_view), name="chain_grant_step_revoke"),
        ] + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:chain_grant_chain_tree", args=[object_id]))

    def tree_view(self, request, chain_id):
        if not self.has_view_permission(request):
            raise PermissionDenied
        view = review.chain_view(chain_id)
        if view is None:
            raise Http404(_("No such chain."))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Chain %(id)s") % {"id": chain_id},
            "chain": view,
            "can_revoke": request.user.has_perm(REVOKE_PERMISSION),
            "kind_colours": KIND_COLOURS,
            "state_colours": STATE_COLOURS,
        }
        return render(request, "chain_grant/admin/chain.html", context)

    def evidence_view(self, request, chain_id):
        if not self.has_view_permission(request):
            raise PermissionDenied
        bundle = review.evidence_bundle(chain_id, oauth2_settings.oidc_issuer(request))
        if bundle is None:
            raise Http404(_("No such chain."))
        response = HttpResponse(json.dumps(bundle, indent=2), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="chain-{chain_id}-evidence.json"'
        return response

    def revoke_view(self, request, step_id):
        """Confirmation page listing what will be revoked; POST revokes."""
        if not request.user.has_perm(REVOKE_PERMISSION):
            raise PermissionDenied
        step = ChainedGrant.objects.filter(pk=step_id).first()
        if step is None:
            raise Http404(_("No such step."))
        subtree = list(
            ChainedGrant.objects.subtree_of(step).select_related("agent", "user").order_by("depth", "created")
        )
        if request.method == "POST":
            reason = (request.POST.get("reason") or "revoked by an administrator")[:200]
            count = lifecycle.revoke_subtree(step, f"{reason} ({request.user.get_username()})")
            self.message_user(
                request, ngettext("Revoked %d step.", "Revoked %d steps.", count) % count, messages.SUCCESS
            )
            return HttpResponseRedirect(reverse("admin:chain_grant_chain_tree", args=[step.root_id]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Revoke a step and its subtree"),
            "step": step,
            "subtree": [(s, review.actor_label(s)) for s in subtree],
            "live": sum(1 for s in subtree if s.state == "live"),
            "tokens": sum(1 for s in subtree if s.access_token_id and not s.revoked_at),
        }
        return render(request, "chain_grant/admin/revoke_confirm.html", context)


@admin.register(ChainedGrant)
class ChainedGrantAdmin(ReviewMixin, admin.ModelAdmin):
    """Every step of every chain."""

    def change_view(self, request, object_id, form_url="", extra_context=None):
        step = ChainedGrant.objects.filter(pk=object_id).only("root_id").first()
        if step is None:
            raise Http404
        return HttpResponseRedirect(reverse("admin:chain_grant_chain_tree", args=[step.root_id]) + f"#step-{step.pk}")


# --- agents ----------------------------------------------------------------------------


def algorithm_choices():
    allowed = chain_grant_settings.allowed_algorithms
    return [(a, a) for a in chain_grant_settings.ALLOWED_ALGORITHMS if a in allowed]


class AgentForm(forms.ModelForm):
    new_keys = forms.CharField(
        label=_("Public key(s)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}),
        help_text=_(
            "Paste a public JWK, JWKS or PEM. Private keys are refused. On an existing agent this "
            "rotates: the pasted key(s) become the only active ones."
        ),
    )
    allowed_algorithms = forms.MultipleChoiceField(
        required=False,
        choices=algorithm_choices,
        widget=forms.CheckboxSelectMultiple,
        help_text=_("None selected = the global allow-list."),
    )

    class Meta:
        model = Agent
        fields = ("identifier", "name", "applications", "allowed_scopes", "allowed_algorithms", "groups", "is_active")

    def clean_groups(self):
        groups = self.cleaned_data.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) and g and " " not in g for g in groups):
            raise forms.ValidationError(_('A list of group names without spaces, e.g. ["research"].'))
        return groups

    def clean_new_keys(self):
        text = self.cleaned_data["new_keys"].strip()
        if not text:
            if not self.instance.pk:
                raise forms.ValidationError(_("A new agent needs a public key."))
            return None
        try:
            return agents.load_public_keys(text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class AgentKeyInline(admin.TabularInline):
    model = AgentKey
    extra = 0
    fields = ("kid", "key_type", "is_active", "created", "disabled_at")
    readonly_fields = ("kid", "key_type", "created", "disabled_at")
    can_delete = False

    @admin.display(description=_("key type"))
    def key_type(self, obj):
        return f"{obj.jwk.get('kty')} {obj.jwk.get('crv', '')}".strip()

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentForm
    list_display = ("identifier", "name", "is_active", "self_asserted", "allowed_scopes", "active_keys", "created")
    list_filter = ("is_active", "self_asserted", "applications")
    search_fields = ("identifier", "name")
    filter_horizontal = ("applications",)
    inlines = (AgentKeyInline,)
    actions = ("activate", "deactivate")

    def get_readonly_fields(self, request, obj=None):
        """The identifier is fixed once the agent has acted (steps record it); the display
        name may change, and the record keeps the old one. A new name is a new agent."""
        fields = tuple(super().get_readonly_fields(request, obj))
        return (*fields, "identifier") if obj is not None and agents.has_acted(obj) else fields

    @admin.display(description=_("active keys"))
    def active_keys(self, obj):
        return sum(1 for k in obj.keys.all() if k.is_active)

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("keys")

    def save_formset(self, request, form, formset, change):
        """Unticking a key in the inline records when it was disabled, as rotation does."""
        for key_form in formset.forms:
            if "is_active" in key_form.changed_data:
                key_form.instance.disabled_at = None if key_form.instance.is_active else timezone.now()
        super().save_formset(request, form, formset, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        keys = form.cleaned_data.get("new_keys")
        if keys:
            text = json.dumps({"keys": keys})
            if change:
                new, disabled = agents.rotate_keys(form.instance, text)
                self.message_user(
                    request, _("Keys rotated: %(new)d active, %(old)d disabled.") % {"new": len(new), "old": disabled}
                )
            else:
                agents.add_keys(form.instance, keys)

    @admin.action(description=_("Activate selected agents"))
    def activate(self, request, queryset):
        count = queryset.update(is_active=True)
        self.message_user(request, ngettext("%d agent activated.", "%d agents activated.", count) % count)

    @admin.action(description=_("Deactivate selected agents"))
    def deactivate(self, request, queryset):
        count = queryset.update(is_active=False)
        self.message_user(request, ngettext("%d agent deactivated.", "%d agents deactivated.", count) % count)


class ChainClientForm(forms.ModelForm):
    class Meta:
        model = ChainClient
        fields = "__all__"

    def clean_client_jwks(self):
        """Public, asymmetric keys only, each with a kid (its thumbprint by default)."""
        value = self.cleaned_data.get("client_jwks") or {}
        if not value:
            return {}
        try:
            keys = proofs.load_public_keys(json.dumps(value))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return {"keys": keys}


@admin.register(ChainClient)
class ChainClientAdmin(admin.ModelAdmin):
    form = ChainClientForm
    list_display = ("application", "code_chain_enabled", "wallet_step", "poc_compatible", "token_endpoint_auth_method")
    list_select_related = ("application",)
    raw_id_fields = ("application",)


class HandoffPolicyForm(forms.ModelForm):
    """A policy, checked by the rules' own validation (core.handoff): known agents and
    groups in edges, scopes DOT's scopes backend knows, limits of at least 0 / 1."""

    class Meta:
        model = HandoffPolicy
        fields = ("application", "edges", "fresh_consent", "max_depth", "max_children")

    def _valid(self, check, name):
        try:
            return check(self.cleaned_data.get(name))
        except handoff.PolicyError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_edges(self):
        return self._valid(lambda v: handoff.validate_edges(v or []), "edges")

    def clean_fresh_consent(self):
        return self._valid(lambda v: handoff.validate_fresh_consent(v or {}), "fresh_consent")

    def clean_max_children(self):
        return self._valid(lambda v: handoff.validate_limit("max_children", v, minimum=1), "max_children")


@admin.register(HandoffPolicy)
class HandoffPolicyAdmin(admin.ModelAdmin):
    form = HandoffPolicyForm
    list_display = ("__str__", "edge_count", "fresh_consent", "max_depth", "max_children", "updated")
    list_select_related = ("application",)
    raw_id_fields = ("application",)
    search_fields = ("application__client_id", "application__name")

    @admin.display(description=_("edges"))
    def edge_count(self, obj):
        return len(obj.edges) if obj.edges else _("any")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records written by the protocol only: viewable, never edited here."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        return refuse_nul_filters(request) or super().changelist_view(request, extra_context)


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = ("thumbprint", "user", "created", "last_presented")
    search_fields = ("thumbprint", "subject", "user__username")
    readonly_fields = ("thumbprint", "subject", "public_jwk", "user", "created", "last_presented")


@admin.register(WalletRequest)
class WalletRequestAdmin(ReadOnlyAdmin):
    list_display = ("id", "application", "status", "created", "expires", "step")
    list_filter = ("status",)
    # Never the digests of the poll token or response code: nothing to gain from showing them.
    fields = (
        "id",
        "application",
        "redirect_uri",
        "scope",
        "status",
        "last_error",
        "parent",
        "wallet",
        "presentation_claims",
        "step",
        "created",
        "expires",
        "completed_at",
    )
    readonly_fields = fields
