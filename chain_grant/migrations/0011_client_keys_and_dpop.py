"""private_key_jwt client keys (names as DOT #1762), the used-jti table, DPoP bindings
(a step's code: dpop_jkt, link_hash version 4; tokens and DOT codes: DPoPBinding) and
the per-client DPoP switch."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('chain_grant', '0010_signed_record_and_joins'),
    ]

    operations = [
        migrations.CreateModel(
            name='DPoPBinding',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('access', 'access token'), ('refresh', 'refresh token'), ('code', 'authorization code (dpop_jkt at authorize)')], max_length=8, verbose_name='kind')),
                ('token_checksum', models.CharField(max_length=64, unique=True, verbose_name='token checksum')),
                ('jkt', models.CharField(max_length=64, verbose_name='key thumbprint')),
                ('expires', models.DateTimeField(db_index=True, verbose_name='expires')),
            ],
            options={
                'verbose_name': 'DPoP binding',
                'verbose_name_plural': 'DPoP bindings',
            },
        ),
        migrations.CreateModel(
            name='UsedJti',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('digest', models.CharField(help_text='SHA-256 of kind, issuer, jti.', max_length=64, unique=True, verbose_name='digest')),
                ('expires', models.DateTimeField(db_index=True, verbose_name='expires')),
            ],
            options={
                'verbose_name': 'used jti',
                'verbose_name_plural': 'used jtis',
            },
        ),
        migrations.AddField(
            model_name='chainclient',
            name='client_jwks',
            field=models.JSONField(blank=True, default=dict, help_text="Public keys (a JWK Set) that verify this client's private_key_jwt assertions.", verbose_name='client JWKS'),
        ),
        migrations.AddField(
            model_name='chainclient',
            name='dpop_required',
            field=models.BooleanField(default=False, help_text='Every hop and code exchange of this client must carry a DPoP proof (RFC 9449).', verbose_name='DPoP required'),
        ),
        migrations.AddField(
            model_name='chainclient',
            name='token_endpoint_auth_method',
            field=models.CharField(blank=True, choices=[('', "the client's DOT secret (and its registered keys, if any)"), ('private_key_jwt', 'private_key_jwt only: the secret is refused')], default='', max_length=32, verbose_name='token endpoint auth method'),
        ),
        migrations.AddField(
            model_name='chainedgrant',
            name='dpop_jkt',
            field=models.CharField(blank=True, help_text="The key this step's code is bound to (RFC 9449): its exchange needs a proof by that key.", max_length=64, verbose_name='DPoP key thumbprint'),
        ),
        migrations.AlterField(
            model_name='chainedgrant',
            name='hash_version',
            field=models.PositiveSmallIntegerField(default=4, help_text="Which fields link_hash covers: 1 = before the recorded actor, 2 = with it, 3 = with joins, the DOT grant's PKCE and resource, and a signed record; 4 = with the DPoP key binding.", verbose_name='link hash version'),
        ),
    ]
