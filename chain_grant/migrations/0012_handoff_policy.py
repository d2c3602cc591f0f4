"""The hand-off policy (docs/policy.md): per-client and default policies, agent groups for
its edges, and each step's policy decision (link_hash version 5; older rows keep theirs)."""

import django.db.models.deletion
import django.db.models.functions.comparison
from django.db import migrations, models
from oauth2_provider.settings import oauth2_settings


class Migration(migrations.Migration):

    dependencies = [
        ('chain_grant', '0011_client_keys_and_dpop'),
        migrations.swappable_dependency(oauth2_settings.APPLICATION_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='agent',
            name='groups',
            field=models.JSONField(blank=True, default=list, help_text='Group names for the hand-off policy (an edge names one as "group:<name>").', verbose_name='groups'),
        ),
        migrations.AddField(
            model_name='chainedgrant',
            name='policy_decision',
            field=models.JSONField(blank=True, default=dict, help_text='The hand-off policy rule that allowed this step (policy, edge, fresh consent), as it was.', verbose_name='policy decision'),
        ),
        migrations.AlterField(
            model_name='chainedgrant',
            name='hash_version',
            field=models.PositiveSmallIntegerField(default=5, help_text="Which fields link_hash covers: 1 = before the recorded actor, 2 = with it, 3 = with joins, the DOT grant's PKCE and resource, and a signed record; 4 = with the DPoP key binding; 5 = with the hand-off policy's decision.", verbose_name='link hash version'),
        ),
        migrations.CreateModel(
            name='HandoffPolicy',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('edges', models.JSONField(blank=True, default=list, help_text='Who may hand off to whom: ["person -> planner", "planner -> group:research", "* -> critic"].', verbose_name='edges')),
                ('fresh_consent', models.JSONField(blank=True, default=dict, help_text='Scopes a person must have granted recently: {"email": {"hops": 1, "minutes": 30}}.', verbose_name='fresh consent')),
                ('max_depth', models.PositiveIntegerField(blank=True, help_text='Deepest step allowed; empty = MAX_DEPTH.', null=True, verbose_name='max depth')),
                ('max_children', models.PositiveIntegerField(blank=True, help_text='Children one step may have; empty = MAX_CHILDREN.', null=True, verbose_name='max children')),
                ('updated', models.DateTimeField(auto_now=True, verbose_name='updated')),
                ('application', models.OneToOneField(blank=True, help_text='Empty: the default policy, for every client without its own.', null=True, on_delete=django.db.models.deletion.CASCADE, related_name='handoff_policy', to=oauth2_settings.APPLICATION_MODEL, verbose_name='application')),
            ],
            options={
                'verbose_name': 'hand-off policy',
                'verbose_name_plural': 'hand-off policies',
                'constraints': [models.UniqueConstraint(django.db.models.functions.comparison.Coalesce('application', models.Value(0)), name='chain_grant_handoffpolicy_one_per_client', violation_error_message='This client (or the default) already has a hand-off policy.')],
            },
        ),
    ]
