"""``ChainOAuthLibCore``: DOT's OAuthLibCore, keeping repeated form parameters.

DOT keeps only the last value of a repeated parameter (except RFC 8707's
``resource``), so oauthlib never sees duplicates. RFC 6749 §3.1 says request
parameters MUST NOT be included more than once; with every value passed on, the
grants' duplicate checks (``code_chain``'s included) refuse such requests.

    OAUTH2_PROVIDER["OAUTH2_BACKEND_CLASS"] = "chain_grant.backends.ChainOAuthLibCore"
"""

from oauth2_provider.oauth2_backends import OAuthLibCore


class ChainOAuthLibCore(OAuthLibCore):
    def extract_body(self, request):
        return [(key, value) for key, values in request.POST.lists() for value in values]
