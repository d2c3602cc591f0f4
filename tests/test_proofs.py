"""chain_grant.core.proofs: hashing, key loading, strict JWS parsing and each claim
check on its own, without HTTP or a database; then the claim rules that a real hop
shows (nbf, floats refused before anything is written)."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
from cryptography.hazmat.primitives import serialization
from jwcrypto import jwk
from oauth2_provider.models import get_grant_model

from chain_grant.client import jose, sign_proof
from chain_grant.core import proofs
from chain_grant.core.codes import code_digest
from chain_grant.core.proofs import ProofError
from chain_grant.models import Agent, ChainedGrant
from chain_grant.settings import DEFAULTS, chain_grant_settings
from tests.helpers import ISSUER, b64url, b64url_decode, error_of, proof_claims, signed

NOW = 1_700_000_000
Grant = get_grant_model()


def compact(header, payload, signature=b"sig") -> str:
    """A compact JWS-shaped string (unsigned: parse_compact never verifies)."""
    encode = lambda v: v if isinstance(v, bytes) else json.dumps(v).encode()  # noqa: E731
    return ".".join(b64url(encode(part)) for part in (header, payload, signature))


@pytest.fixture
def ec_key():
    return jwk.JWK.generate(kty="EC", crv="P-256")


# --- code_hash --------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["abc", "Qcb0Orv1zh30vL1MPRsbm-diHiMwcLyZvn1arpZv-Jxf_11jnpEX3Tgfvk"])
def test_code_hash_is_the_oidc_c_hash(code):
    # OIDC Core 3.3.2.11: base64url of the left-most half of the hash of the ASCII code
    # (SHA-256 for RS256/ES256/PS256): 16 bytes, 22 characters, no padding.
    left_half = hashlib.sha256(code.encode("ascii")).digest()[:16]
    expected = base64.urlsafe_b64encode(left_half).decode().rstrip("=")
    assert proofs.code_hash(code) == expected
    assert len(expected) == 22 and "=" not in expected


def test_code_hash_known_value():
    # Independently: SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223 b00361a396177a9cb410ff61f20015ad
    left = bytes.fromhex("ba7816bf8f01cfea414140de5dae2223")
    assert proofs.code_hash("abc") == base64.urlsafe_b64encode(left).decode().rstrip("=")
    assert proofs.code_hash("abc") == "ungWv48Bz-pBQUDeXa4iIw"


def test_check_code_hash_accepts_the_matching_code_only():
    claims = {"c_hash": proofs.code_hash("the-code")}
    proofs.check_code_hash(claims, "the-code")
    with pytest.raises(ProofError) as exc:
        proofs.check_code_hash(claims, "another-code")
    assert exc.value.error == "invalid_grant"
    with pytest.raises(ProofError):
        proofs.check_code_hash({}, "the-code")  # required by default
    proofs.check_code_hash({}, "the-code", required=False)
    with pytest.raises(ProofError):
        proofs.check_code_hash({"c_hash": 12}, "the-code", required=False)


def test_check_code_hash_with_a_non_ascii_code_is_a_proof_error():
    # Regression: the code comes from the request (authorization_code); codes are ASCII,
    # so a non-ASCII one can never match: an invalid_grant, not a UnicodeEncodeError (500).
    with pytest.raises(ProofError) as exc:
        proofs.check_code_hash({"c_hash": "x"}, "caf\u00e9")
    assert exc.value.error == "invalid_grant"
    with pytest.raises(ProofError):
        proofs.check_code_hash({"c_hash": proofs.code_hash("cafe")}, "caf\u00e9")


# --- load_public_keys -------------------------------------------------------------------


def test_load_public_jwk_sets_kid_to_thumbprint(ec_key):
    [public] = proofs.load_public_keys(ec_key.export_public())
    assert public["kty"] == "EC" and public["crv"] == "P-256"
    assert public["kid"] == ec_key.thumbprint()
    assert "d" not in public
    assert {k: v for k, v in public.items() if k != "kid"} == ec_key.export_public(as_dict=True)


def test_load_public_jwk_keeps_its_own_kid():
    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="planner-2026")
    [public] = proofs.load_public_keys("\n  " + key.export_public() + "\n")
    assert public["kid"] == "planner-2026"


def test_load_jwks_returns_every_key(ec_key):
    rsa = jwk.JWK.generate(kty="RSA", size=2048)
    okp = jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="ed")
    jwks = {"keys": [json.loads(k.export_public()) for k in (ec_key, rsa, okp)]}
    keys = proofs.load_public_keys(json.dumps(jwks))
    assert [k["kty"] for k in keys] == ["EC", "RSA", "OKP"]
    assert [k["kid"] for k in keys] == [ec_key.thumbprint(), rsa.thumbprint(), "ed"]
    assert not any("d" in k or "p" in k for k in keys)


@pytest.mark.parametrize("kty", ["EC", "RSA"])
def test_load_public_pem(kty):
    key = jwk.JWK.generate(kty="EC", crv="P-384") if kty == "EC" else jwk.JWK.generate(kty="RSA", size=2048)
    pem = key.export_to_pem(private_key=False, password=None).decode()
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    [public] = proofs.load_public_keys(pem)
    assert public["kty"] == kty
    assert public["kid"] == key.thumbprint()
    assert jwk.JWK(**public).thumbprint() == key.thumbprint()
    assert not jwk.JWK(**public).has_private


def test_refuses_a_private_jwk(ec_key):
    with pytest.raises(ValueError, match="private"):
        proofs.load_public_keys(ec_key.export_private())


def test_refuses_a_jwks_with_one_private_key(ec_key):
    other = jwk.JWK.generate(kty="EC", crv="P-256")
    jwks = {"keys": [json.loads(ec_key.export_public()), json.loads(other.export_private())]}
    with pytest.raises(ValueError, match="private"):
        proofs.load_public_keys(json.dumps(jwks))


@pytest.mark.parametrize(
    "private_format",
    [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
)
def test_refuses_a_private_pem(ec_key, private_format):
    pem = (
        ec_key.get_op_key("sign")
        .private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption())
        .decode()
    )
    assert "PRIVATE KEY" in pem.splitlines()[0]
    with pytest.raises(ValueError, match="private"):
        proofs.load_public_keys(pem)


def test_refuses_an_encrypted_private_pem(ec_key):
    pem = ec_key.export_to_pem(private_key=True, password=b"pw").decode()
    with pytest.raises(ValueError, match="private"):
        proofs.load_public_keys(pem)


def test_refuses_a_symmetric_key():
    oct_key = jwk.JWK.generate(kty="oct", size=256)
    with pytest.raises(ValueError, match="symmetric"):
        proofs.load_public_keys(oct_key.export())
    with pytest.raises(ValueError, match="symmetric"):
        proofs.load_public_keys(json.dumps({"keys": [json.loads(oct_key.export())]}))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a key",
        "[]",
        '{"keys": []}',
        '{"kty": "EC"}',
        '{"keys": "abc"}',
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
    ],
)
def test_refuses_garbage(text):
    with pytest.raises(ValueError):
        proofs.load_public_keys(text)


# --- did:jwk ----------------------------------------------------------------------------


def test_did_jwk_round_trip(ec_key):
    public = ec_key.export_public(as_dict=True)
    did = jose.did_jwk(public)
    assert did.startswith("did:jwk:")
    suffix = did[len("did:jwk:") :]
    assert "=" not in suffix and "+" not in suffix and "/" not in suffix
    decoded = json.loads(b64url_decode(suffix))
    assert decoded == public
    assert jwk.JWK(**decoded).thumbprint() == ec_key.thumbprint()


def test_did_jwk_does_not_depend_on_member_order(ec_key):
    public = ec_key.export_public(as_dict=True)
    reordered = dict(reversed(list(public.items())))
    assert list(reordered) != list(public)
    assert jose.did_jwk(reordered) == jose.did_jwk(public)
    other = jwk.JWK.generate(kty="EC", crv="P-256").export_public(as_dict=True)
    assert jose.did_jwk(public) != jose.did_jwk(other)


# --- parse_compact ----------------------------------------------------------------------


def test_parse_compact_returns_header_and_payload(ec_key):
    token = sign_proof(ec_key, sub="planner", aud=ISSUER, code="c")
    header, payload = proofs.parse_compact(token)
    assert header["alg"] == "ES256" and header["kid"] == ec_key.thumbprint()
    assert payload["sub"] == "planner" and payload["aud"] == ISSUER
    assert payload["c_hash"] == proofs.code_hash("c")


@pytest.mark.parametrize(
    "token",
    [
        "a.b",
        "a.b.c.d",
        ".b.c",
        "a..c",
        "a b.c.d",
        "a+b.c.d",
        "YQ==.YQ==.YQ==",
        '{"payload": "e30", "signatures": []}',
        "e30.e30.c2ln.",
        "e30.e30.c2ln ",
    ],
)
def test_parse_compact_rejects_non_compact(token):
    with pytest.raises(ProofError) as exc:
        proofs.parse_compact(token)
    assert exc.value.error == "invalid_request"
    assert "compact" in exc.value.description


def test_parse_compact_rejects_a_trailing_newline():
    # Regression: re.match(r"^...$") accepted "a.b.c\n" as compact ($ matches before a
    # final newline); the proof was then refused later, as invalid_grant.
    with pytest.raises(ProofError) as exc:
        proofs.parse_compact("e30.e30.c2ln\n")
    assert exc.value.error == "invalid_request"


def test_parse_compact_rejects_missing_proof():
    with pytest.raises(ProofError) as exc:
        proofs.parse_compact("")
    assert exc.value.error == "invalid_request"


@pytest.mark.parametrize(
    "token",
    [
        "A." + b64url(b"{}") + ".c2ln",  # 1 character: not valid base64
        b64url(b'{"alg":"ES256"}') + ".A.c2ln",
        b64url(b"not json") + "." + b64url(b"{}") + ".c2ln",
        b64url(b'{"alg":"ES256"}') + "." + b64url(b"\xff\xfe\x00") + ".c2ln",  # not UTF-8
        b64url(b'{"alg":"ES256"}') + "." + b64url(b'{"sub": "x"') + ".c2ln",  # truncated JSON
    ],
)
def test_parse_compact_rejects_bad_base64_or_json(token):
    with pytest.raises(ProofError) as exc:
        proofs.parse_compact(token)
    assert exc.value.error == "invalid_request"
    assert "base64url JSON" in exc.value.description


@pytest.mark.parametrize(
    "header, payload",
    [
        ({"alg": "ES256"}, [1, 2]),
        ({"alg": "ES256"}, "a string"),
        ({"alg": "ES256"}, 42),
        ({"alg": "ES256"}, None),
        (["ES256"], {"sub": "x"}),
    ],
)
def test_parse_compact_rejects_non_object_json(header, payload):
    with pytest.raises(ProofError) as exc:
        proofs.parse_compact(compact(header, payload))
    assert exc.value.error == "invalid_request"
    assert "JSON objects" in exc.value.description


def test_parse_compact_size_limit(chain_settings):
    padding = "x" * (DEFAULTS["PROOF_MAX_BYTES"])
    token = compact({"alg": "ES256"}, {"sub": "x", "pad": padding})
    assert len(token) > chain_grant_settings.PROOF_MAX_BYTES
    with pytest.raises(ProofError) as exc:
        proofs.parse_compact(token)
    assert exc.value.error == "invalid_request"
    assert "too large" in exc.value.description

    small = compact({"alg": "ES256"}, {"sub": "x"})
    chain_settings(PROOF_MAX_BYTES=len(small))
    assert proofs.parse_compact(small)[1] == {"sub": "x"}  # exactly at the limit
    chain_settings(PROOF_MAX_BYTES=len(small) - 1)
    with pytest.raises(ProofError, match="too large"):
        proofs.parse_compact(small)


def test_parse_compact_rejects_deeply_nested_json():
    # Regression: json.loads raised RecursionError (HTTP 500) on ~5000 nested arrays,
    # which fit in PROOF_MAX_BYTES and need no valid signature.
    token = b64url(b'{"alg":"ES256"}') + "." + b64url(b"[" * 5000) + ".c2ln"
    assert len(token) <= DEFAULTS["PROOF_MAX_BYTES"]
    with pytest.raises(ProofError) as exc:
        proofs.parse_compact(token)
    assert exc.value.error == "invalid_request"


# --- check_algorithm --------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS512", "EdDSA"])
def test_check_algorithm_accepts_allowed(alg):
    assert proofs.check_algorithm(alg) == alg


@pytest.mark.parametrize("alg", ["none", "HS256", "HS384", "HS512"])
def test_check_algorithm_refuses_forbidden_even_if_configured(chain_settings, alg):
    chain_settings(ALLOWED_ALGORITHMS=["ES256", alg])
    assert alg in chain_grant_settings.ALLOWED_ALGORITHMS
    with pytest.raises(ProofError) as exc:
        proofs.check_algorithm(alg)
    assert exc.value.error == "invalid_grant"
    with pytest.raises(ProofError):
        proofs.check_algorithm(alg, [alg])  # an agent's list cannot allow it either
    assert proofs.check_algorithm("ES256") == "ES256"


@pytest.mark.parametrize("alg", [None, "", "es256", "ES 256", ["ES256"], 256, "NONE"])
def test_check_algorithm_refuses_unknown_or_malformed(alg):
    with pytest.raises(ProofError):
        proofs.check_algorithm(alg)


def test_check_algorithm_follows_settings(chain_settings):
    chain_settings(ALLOWED_ALGORITHMS=["EdDSA"])
    assert proofs.check_algorithm("EdDSA") == "EdDSA"
    with pytest.raises(ProofError):
        proofs.check_algorithm("ES256")


def test_check_algorithm_respects_an_agents_narrower_list(chain_settings):
    assert proofs.check_algorithm("ES256", ["ES256"]) == "ES256"
    with pytest.raises(ProofError):
        proofs.check_algorithm("RS256", ["ES256"])
    assert proofs.check_algorithm("RS256", []) == "RS256"  # empty = the global list
    assert proofs.check_algorithm("RS256", None) == "RS256"
    # An agent's list only narrows: it cannot add what the settings do not allow.
    chain_settings(ALLOWED_ALGORITHMS=["ES256"])
    with pytest.raises(ProofError):
        proofs.check_algorithm("RS256", ["RS256", "ES256"])
    assert proofs.check_algorithm("ES256", ["RS256", "ES256"]) == "ES256"


# --- check_times ------------------------------------------------------------------------


def test_check_times_accepts_a_fresh_proof():
    proofs.check_times({"iat": NOW, "exp": NOW + 60}, now=NOW)
    proofs.check_times({"iat": NOW + 30, "exp": NOW + 90}, now=NOW)  # iat within the skew
    proofs.check_times({"iat": NOW - 100, "exp": NOW - 29}, now=NOW)  # exp within the skew
    proofs.check_times({"iat": NOW, "exp": NOW + 300}, now=NOW)  # exactly the max lifetime


def test_check_times_uses_the_clock_by_default():
    import time

    now = int(time.time())
    proofs.check_times({"iat": now, "exp": now + 60})
    with pytest.raises(ProofError, match="expired"):
        proofs.check_times({"iat": now - 400, "exp": now - 200})


def test_check_times_refuses_iat_in_the_future():
    with pytest.raises(ProofError, match="future") as exc:
        proofs.check_times({"iat": NOW + 31, "exp": NOW + 60}, now=NOW)
    assert exc.value.error == "invalid_grant"


def test_check_times_refuses_expired():
    with pytest.raises(ProofError, match="expired"):
        proofs.check_times({"iat": NOW - 100, "exp": NOW - 30}, now=NOW)


def test_check_times_refuses_a_too_long_lifetime():
    with pytest.raises(ProofError, match="too long"):
        proofs.check_times({"iat": NOW, "exp": NOW + 301}, now=NOW)


def test_check_times_follows_settings(chain_settings):
    chain_settings(PROOF_CLOCK_SKEW=0, MAX_PROOF_LIFETIME=10)
    with pytest.raises(ProofError, match="future"):
        proofs.check_times({"iat": NOW + 1, "exp": NOW + 5}, now=NOW)
    with pytest.raises(ProofError, match="expired"):
        proofs.check_times({"iat": NOW - 5, "exp": NOW}, now=NOW)
    with pytest.raises(ProofError, match="too long"):
        proofs.check_times({"iat": NOW, "exp": NOW + 11}, now=NOW)
    proofs.check_times({"iat": NOW, "exp": NOW + 10}, now=NOW)


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": NOW + 60},
        {"iat": NOW},
        {"iat": str(NOW), "exp": NOW + 60},
        {"iat": float(NOW), "exp": NOW + 60},
        {"iat": NOW, "exp": float(NOW + 60)},
        {"iat": True, "exp": NOW + 60},
        {"iat": NOW, "exp": True},
        {"iat": None, "exp": NOW + 60},
        {"iat": [NOW], "exp": NOW + 60},
    ],
)
def test_check_times_requires_integer_claims(claims):
    with pytest.raises(ProofError, match="not an integer"):
        proofs.check_times(claims, now=NOW)


# --- check_audience ---------------------------------------------------------------------


def test_check_audience_string_and_list():
    proofs.check_audience({"aud": ISSUER}, [ISSUER])
    proofs.check_audience({"aud": ["https://other", ISSUER]}, [ISSUER])
    proofs.check_audience({"aud": ISSUER}, ["https://other", ISSUER])
    proofs.check_audience({"aud": [17, ISSUER]}, [ISSUER])


@pytest.mark.parametrize(
    "aud",
    ["https://other", ["https://other"], [], None, {"aud": ISSUER}, [[ISSUER]], ISSUER + "/", ISSUER.upper()],
)
def test_check_audience_refuses_others(aud):
    claims = {} if aud is None else {"aud": aud}
    with pytest.raises(ProofError) as exc:
        proofs.check_audience(claims, [ISSUER])
    assert exc.value.error == "invalid_grant"


def test_check_audience_optional_only_when_absent():
    proofs.check_audience({}, [ISSUER], required=False)
    with pytest.raises(ProofError):
        proofs.check_audience({"aud": "https://other"}, [ISSUER], required=False)


# --- check_jti --------------------------------------------------------------------------


def test_check_jti():
    assert proofs.check_jti({"jti": "abc"}) == "abc"
    assert proofs.check_jti({"jti": "j" * 255}) == "j" * 255
    assert proofs.check_jti({}, required=False) == ""
    for claims in ({}, {"jti": ""}, {"jti": "j" * 256}, {"jti": 123}, {"jti": ["a"]}, {"jti": None}):
        with pytest.raises(ProofError) as exc:
            proofs.check_jti(claims)
        assert exc.value.error == "invalid_grant"
    with pytest.raises(ProofError):
        proofs.check_jti({"jti": ""}, required=False)


# --- select_key / verify_signature / message_digest ---------------------------------------


def test_verify_signature(ec_key):
    token = sign_proof(ec_key, sub="planner", aud=ISSUER, code="c")
    public = ec_key.export_public(as_dict=True)
    proofs.verify_signature(token, public, "ES256")
    with pytest.raises(ProofError, match="signature"):
        other = jwk.JWK.generate(kty="EC", crv="P-256").export_public(as_dict=True)
        proofs.verify_signature(token, other, "ES256")
    with pytest.raises(ProofError, match="signature"):
        proofs.verify_signature(token, public, "ES384")  # not the header's alg
    header, payload, signature = token.split(".")
    tampered = header + "." + b64url(json.dumps({"sub": "admin"}).encode()) + "." + signature
    with pytest.raises(ProofError, match="signature"):
        proofs.verify_signature(tampered, public, "ES256")


def test_message_digest_claim():
    assert proofs.message_digest({}) == ""
    assert proofs.message_digest({"msg_sha256": "ab" * 32}) == "ab" * 32
    for value in (1, "x" * 129, ["a"]):
        with pytest.raises(ProofError):
            proofs.message_digest({"msg_sha256": value})


@pytest.mark.parametrize("text", ["{}", '{"keys": [{}]}', '{"keys": {}}', '{"keys": ["x"]}', "[]", '{"kty": 1}'])
def test_load_public_keys_refuses_what_is_not_a_key(text):
    """jwcrypto accepts ``JWK(**{})``; a key without kty must be refused, not a KeyError (500)."""
    with pytest.raises(ValueError):
        proofs.load_public_keys(text)


# --- the claim rules seen through a real hop ------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value",
    [-0.0, 1e20, 1.5, 2.0, 1e-7, [1, 0.5], {"nested": 3.0}],
    ids=["-0.0", "1e20", "1.5", "2.0", "1e-7", "in a list", "in an object"],
)
def test_float_claims_are_refused_and_write_nothing(value, flow, alice, planner):
    """Rule: proofs carrying floats are invalid_request (PostgreSQL's jsonb would
    rewrite them, so verify_chain would raise a false alarm); nothing is written."""
    code, _ = flow.authorize(alice, scope="openid read")
    response = flow.hop(code, signed(planner, proof_claims(planner, code, confidence=value)))
    assert error_of(response) == (400, "invalid_request")
    assert not ChainedGrant.objects.exists()
    assert list(Grant.objects.values_list("code", flat=True)) == [code_digest(code)]
    assert Agent.objects.count() == 1 and not planner.model.steps.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("nbf_offset", "expected"), [(120, 400), (-10, 200), (0, 200)], ids=["future", "past", "now"])
def test_proof_nbf_in_the_future_is_refused(nbf_offset, expected, flow, alice, planner):
    """Rule: a proof is not accepted before its ``nbf`` (beyond the clock skew)."""
    code, _ = flow.authorize(alice, scope="openid read")
    response = flow.hop(code, planner.proof(code, extra={"nbf": int(time.time()) + nbf_offset}))
    assert response.status_code == expected, response.content
    if expected == 400:
        assert response.json()["error"] == "invalid_grant"
        assert "nbf" in response.json()["error_description"]
        assert not ChainedGrant.objects.exists()
