"""Joins and the signed record (docs/record.md): a step's joined parents (``joined``,
mirrored by ``ChainJoin``), its DOT grant's PKCE and resource digest, its signed
record; append-only state events; each chain's signed head. ``hash_version`` 3 covers
the new fields; existing steps keep their version, so their link_hash still verifies,
and a chain recorded before this gets its head on its next write."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('chain_grant', '0009_step_recorded_actor'),
    ]

    operations = [
        migrations.CreateModel(
            name='ChainHead',
            fields=[
                ('root', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='head', serialize=False, to='chain_grant.chainedgrant', verbose_name='chain root')),
                ('steps', models.PositiveIntegerField(default=0, verbose_name='steps')),
                ('leaves', models.CharField(default='', max_length=64, verbose_name='leaves digest')),
                ('events', models.PositiveIntegerField(default=0, verbose_name='events')),
                ('event_hash', models.CharField(blank=True, max_length=64, verbose_name='last event hash')),
                ('jws', models.TextField(blank=True, verbose_name='signed head')),
                ('updated', models.DateTimeField(default=django.utils.timezone.now, verbose_name='updated')),
            ],
            options={
                'verbose_name': 'chain head',
                'verbose_name_plural': 'chain heads',
            },
        ),
        migrations.AddField(
            model_name='chainedgrant',
            name='grant_digest',
            field=models.CharField(blank=True, help_text="SHA-256 of the code's PKCE challenge and resource, compared with DOT's Grant at exchange.", max_length=64, verbose_name='DOT grant digest'),
        ),
        migrations.AddField(
            model_name='chainedgrant',
            name='joined',
            field=models.JSONField(blank=True, default=list, help_text='[{step, link_hash}] of the joined parents.', verbose_name='joined parents'),
        ),
        migrations.AddField(
            model_name='chainedgrant',
            name='record_jws',
            field=models.TextField(blank=True, help_text="JWS by the IdP's record key over this step's link hash.", verbose_name='signed record'),
        ),
        migrations.AlterField(
            model_name='chainedgrant',
            name='hash_version',
            field=models.PositiveSmallIntegerField(default=3, help_text="Which fields link_hash covers: 1 = before the recorded actor, 2 = with it, 3 = with joins, the DOT grant's PKCE and resource, and a signed record.", verbose_name='link hash version'),
        ),
        migrations.CreateModel(
            name='ChainJoin',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('position', models.PositiveSmallIntegerField(verbose_name='position')),
                ('parent', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='joined_into', to='chain_grant.chainedgrant', verbose_name='joined parent')),
                ('root', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='chain_grant.chainedgrant', verbose_name='chain root')),
                ('step', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='joins', to='chain_grant.chainedgrant', verbose_name='join step')),
            ],
            options={
                'verbose_name': 'chain join',
                'verbose_name_plural': 'chain joins',
                'ordering': ('step', 'position'),
                'constraints': [models.UniqueConstraint(fields=('step', 'parent'), name='chain_grant_join_step_parent')],
            },
        ),
        migrations.CreateModel(
            name='StepEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('seq', models.PositiveIntegerField(verbose_name='number in the chain')),
                ('kind', models.CharField(choices=[('exchanged', 'exchanged'), ('revoked', 'revoked')], max_length=16, verbose_name='kind')),
                ('data', models.JSONField(blank=True, default=dict, verbose_name='data')),
                ('at', models.DateTimeField(verbose_name='at')),
                ('hash', models.CharField(max_length=64, verbose_name='hash')),
                ('jws', models.TextField(blank=True, verbose_name='signed')),
                ('root', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='chain_grant.chainedgrant', verbose_name='chain root')),
                ('step', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='events', to='chain_grant.chainedgrant', verbose_name='step')),
            ],
            options={
                'verbose_name': 'step event',
                'verbose_name_plural': 'step events',
                'ordering': ('root', 'seq'),
                'constraints': [models.UniqueConstraint(fields=('root', 'seq'), name='chain_grant_event_root_seq')],
            },
        ),
    ]
