"""DOT's Grant table keeps code digests from now on (chain_grant.oauth.digest_codes):
the live codes it holds in clear are replaced by their SHA-256 digest, so codes
issued before the upgrade still exchange and none stays usable at rest."""

import hashlib
import re

from django.db import migrations
from oauth2_provider.settings import oauth2_settings

DIGEST = re.compile(r"[0-9a-f]{64}")


def hash_codes(apps, schema_editor):
    Grant = apps.get_model(*oauth2_settings.GRANT_MODEL.split("."))
    for pk, code in Grant.objects.values_list("pk", "code").iterator(chunk_size=2000):
        if not DIGEST.fullmatch(code):  # DOT's codes are 30 characters, chain_grant's 43
            Grant.objects.filter(pk=pk).update(code=hashlib.sha256(code.encode("utf-8")).hexdigest())


class Migration(migrations.Migration):
    dependencies = [
        ("chain_grant", "0005_step_key_thumbprint"),
        migrations.swappable_dependency(oauth2_settings.GRANT_MODEL),
    ]

    operations = [migrations.RunPython(hash_codes, migrations.RunPython.noop, elidable=True)]
