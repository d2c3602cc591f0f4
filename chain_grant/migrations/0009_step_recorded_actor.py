"""Each step records its actor as it was (``actor``), covered by link_hash version 2.

Existing steps keep hash version 1, so their stored link_hash still verifies; their
``actor`` is filled from what the step itself recorded (its subject, proof claims and
key thumbprint) and, for the display name and username, from the rows as they are at
migration time (the best that is known; later renames no longer change it)."""

from django.db import migrations, models


def fill_actors(apps, schema_editor):
    ChainedGrant = apps.get_model("chain_grant", "ChainedGrant")
    steps = ChainedGrant.objects.filter(actor={}).select_related("agent", "user")
    for step in steps.iterator(chunk_size=500):
        if step.kind == "agent":
            claims = step.proof_claims or {}
            actor = {
                "identifier": step.subject or claims.get("sub", ""),
                "name": step.agent.name if step.agent_id else "",
                "key_thumbprint": step.agent_key_thumbprint,
            }
        elif step.kind == "user":
            actor = {"username": step.user.get_username() if step.user_id else "", "sub": step.subject}
        else:
            actor = {"did": step.subject}
        ChainedGrant.objects.filter(pk=step.pk).update(actor=actor)


class Migration(migrations.Migration):
    dependencies = [("chain_grant", "0008_chain_client_poc_compatible")]

    operations = [
        migrations.AddField(
            model_name="chainedgrant",
            name="actor",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Who acted, as they were at this step (agent identifier, name and key; person; wallet DID).",
                verbose_name="actor as recorded",
            ),
        ),
        migrations.AddField(
            model_name="chainedgrant",
            name="hash_version",
            field=models.PositiveSmallIntegerField(default=1, verbose_name="link hash version"),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="chainedgrant",
            name="hash_version",
            field=models.PositiveSmallIntegerField(
                default=2,
                help_text="Which fields link_hash covers: 1 = before the recorded actor, 2 = with it.",
                verbose_name="link hash version",
            ),
        ),
        migrations.RunPython(fill_actors, migrations.RunPython.noop),
    ]
