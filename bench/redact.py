"""How long ``chain_grant.redaction.redact()`` takes on one ~1 KB log line (it runs on
every line every handler emits). No database, no Django.

    python bench/redact.py [--number N]
"""

import argparse
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chain_grant.redaction import redact  # noqa: E402

CODE = "Zx3kQ9vLmN2pR7sT1uW4yA6bC8dE0fGh"
JWS = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9." + "eyJzdWIiOiJwbGFubmVyIn0" * 8 + "." + "sig_" * 20
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def pad(line: str, size: int = 1024) -> str:
    return line + " " + "x" * max(0, size - len(line) - 1)


LINES = {
    # gunicorn's access line of a consent step's authorize URL
    "access line, code in query": pad(
        f'10.0.0.9 - - [01/Jan/2026:12:00:00 +0000] "GET /oauth/authorize/?client_id=chain-client'
        f"&response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A8765%2Foauth-callback&scope=openid+read+write"
        f"&state=st-user&code={CODE}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        f'&code_challenge_method=S256 HTTP/1.1" 200 5123 "https://rp.example/start" "{UA}" 0.012'
    ),
    # oauthlib's DEBUG line with a grant dict and oauthlib.Request repr (set_debug on)
    "oauthlib debug, dict repr": pad(
        f"Created authorization code grant {{'code': '{CODE}', 'state': 'st'}} for request "
        f'<oauthlib.Request url="http://testserver/oauth/token", http_method="POST", headers="{{\'Content-Type\': '
        f"'application/x-www-form-urlencoded', 'Authorization': 'Basic Y2hhaW4tY2xpZW50OnMzY3JldA=='}}\", "
        f"body=\"[('grant_type', 'code_chain'), ('authorization_code', '{CODE}'), ('id_token', '{JWS}')]\">."
    ),
    # a line with nothing to redact
    "no credential": pad(
        '10.0.0.9 - - [01/Jan/2026:12:00:00 +0000] "GET /static/admin/css/base.css HTTP/1.1" 200 5123 "-" ' + f'"{UA}"'
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    for name, line in LINES.items():
        best = min(timeit.repeat(lambda line=line: redact(line), number=args.number, repeat=5)) / args.number
        print(f"{name:32} {len(line):5} chars  {best * 1e6:7.2f} µs/line")


if __name__ == "__main__":
    main()
