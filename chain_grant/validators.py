"""Public names for ``OAUTH2_PROVIDER["OAUTH2_VALIDATOR_CLASS"]``.

class MyValidator(ChainValidatorMixin, MyOAuth2Validator): ...   # your IdP's own, mixin first
OAUTH2_PROVIDER["OAUTH2_VALIDATOR_CLASS"] = "myidp.validators.MyValidator"
# a new IdP may take the ready-made one: "chain_grant.validators.ChainOAuth2Validator"
"""

from .oauth.digest_codes import DigestCodesMixin
from .oauth.hardening import DOTHardeningMixin
from .oauth.validator import ChainOAuth2Validator, ChainValidatorMixin

__all__ = ["ChainOAuth2Validator", "ChainValidatorMixin", "DOTHardeningMixin", "DigestCodesMixin"]
