from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("chain_grant", "0007_chain_client_wallet_step")]

    operations = [
        migrations.AddField(
            model_name="chainclient",
            name="poc_compatible",
            field=models.BooleanField(
                default=False,
                help_text=(
                    "With CHAIN_GRANT['RELAXED_PROOFS'] on: accept the requests of Boruta's proof of concept from this "
                    "client (PKCE optional, a self-asserted key named by its thumbprint, one-hour proofs). "
                    "Never in production."
                ),
                verbose_name="PoC compatible",
            ),
        ),
    ]
