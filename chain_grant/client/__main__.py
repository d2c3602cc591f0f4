"""``python -m chain_grant.client proof|actor-token|assertion|pkce …``: for shell scripts and curl users."""

from __future__ import annotations

import argparse

from .keys import CLIENT_ASSERTION_TYPE, actor_token, client_assertion, load_private_key, sign_proof
from .pkce import pkce_pair


def main(argv: list[str] | None = None) -> int:
    """``python -m chain_grant.client proof|actor-token|assertion|pkce …``: for shell scripts and curl users."""
    parser = argparse.ArgumentParser(prog="python -m chain_grant.client")
    sub = parser.add_subparsers(dest="command", required=True)
    proof = sub.add_parser("proof", help="Print a signed hop proof (compact JWS).")
    proof.add_argument("--key", required=True, help="The agent's private key: a JWK (JSON) or PEM file.")
    proof.add_argument("--sub", required=True, help="The agent's identifier.")
    proof.add_argument("--aud", required=True, help="The IdP's issuer, e.g. http://127.0.0.1:8000/oauth")
    proof.add_argument("--code", required=True, help="The previous code (for c_hash).")
    proof.add_argument("--message", help="The message the agent received (signed as msg_sha256).")
    actor = sub.add_parser(
        "actor-token",
        help="Print an RFC 8693 actor_token (a JWT signed by the agent, bound to the subject token by ath).",
    )
    actor.add_argument("--key", required=True, help="The agent's private key: a JWK (JSON) or PEM file.")
    actor.add_argument("--sub", required=True, help="The agent's identifier.")
    actor.add_argument("--aud", required=True, help="The IdP's issuer, e.g. http://127.0.0.1:8000/oauth")
    actor.add_argument("--subject-token", required=True, help="The access token to exchange (for ath).")
    actor.add_argument("--message", help="The message the agent received (signed as msg_sha256).")
    assertion = sub.add_parser(
        "assertion",
        help="Print a private_key_jwt client assertion (RFC 7523), single use: one per request.",
        description="Post it as client_assertion, with client_assertion_type="
        + CLIENT_ASSERTION_TYPE
        + " and no client secret (curl: --data-urlencode client_assertion=...).",
    )
    assertion.add_argument("--key", required=True, help="The client's private key: a JWK (JSON) or PEM file.")
    assertion.add_argument("--client-id", required=True, help="The client's client_id (iss and sub).")
    assertion.add_argument("--aud", required=True, help="The IdP's issuer, or the URL of the endpoint.")
    assertion.add_argument("--lifetime", type=int, default=60, help="Seconds until it expires (default 60).")
    sub.add_parser("pkce", help="Print a PKCE code_verifier and its S256 code_challenge.")
    args = parser.parse_args(argv)
    if args.command == "pkce":
        verifier, challenge = pkce_pair()
        print(f"CODE_VERIFIER={verifier}\nCODE_CHALLENGE={challenge}")
    elif args.command == "actor-token":
        key = load_private_key(args.key)
        print(actor_token(key, sub=args.sub, aud=args.aud, subject_token=args.subject_token, message=args.message))
    elif args.command == "assertion":
        key = load_private_key(args.key)
        print(client_assertion(key, client_id=args.client_id, aud=args.aud, lifetime=args.lifetime))
    else:
        key = load_private_key(args.key)
        print(sign_proof(key, sub=args.sub, aud=args.aud, code=args.code, message=args.message))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
