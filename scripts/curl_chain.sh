#!/usr/bin/env bash
# The README's curl sequence: alice consents (curl with a cookie jar stands in for
# the browser), the planner agent advances the chain with grant_type=code_chain,
# the planner's code is exchanged, and introspection shows the actor chain; then the
# researcher takes the planner's token further with RFC 8693 token exchange. The demo
# client authenticates with its key (private_key_jwt, RFC 7523): a fresh assertion per
# request (`python -m chain_grant.client assertion`), no client secret.
# Needs `make run` (or any idp_project server) and `bootstrap_demo`'s var/ files.
set -euo pipefail
IDP=${IDP:-http://127.0.0.1:8000}
VAR=${IDP_VAR_DIR:-var}
PY=${PY:-.venv/bin/python}
cred() { "$PY" -c "import json,sys; print(json.load(open('$VAR/demo_credentials.json'))[sys.argv[1]])" "$1"; }
CLIENT_KEY="$VAR/$(cred client_key)"
# One client assertion per request (each jti is single-use), aud = the issuer.
assertion() { "$PY" -m chain_grant.client assertion --key "$CLIENT_KEY" --client-id chain-demo --aud "$IDP/oauth"; }
CLIENT_AUTH=(-d "client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
ALICE_PW=$(cred alice_password)
REDIRECT=http://127.0.0.1:8765/oauth-callback

# 1. A root code: alice logs in and approves on the authorize endpoint (PKCE S256).
eval "$("$PY" -m chain_grant.client pkce)"
JAR=$(mktemp); trap 'rm -f "$JAR"' EXIT
csrf() { awk '/csrftoken/ {print $7}' "$JAR"; }
curl -sf -c "$JAR" -b "$JAR" -o /dev/null "$IDP/accounts/login/"
curl -sf -c "$JAR" -b "$JAR" -o /dev/null -e "$IDP/accounts/login/" \
  -d "csrfmiddlewaretoken=$(csrf)&username=alice&password=$ALICE_PW" "$IDP/accounts/login/"
AUTHZ="client_id=chain-demo&response_type=code&redirect_uri=$REDIRECT&scope=openid+read+write&state=s1"
AUTHZ="$AUTHZ&code_challenge=$CODE_CHALLENGE&code_challenge_method=S256"
curl -sf -c "$JAR" -b "$JAR" -o /dev/null "$IDP/oauth/authorize?$AUTHZ"
ROOT_CODE=$(curl -s -c "$JAR" -b "$JAR" -o /dev/null -w '%{redirect_url}' -e "$IDP/oauth/authorize?$AUTHZ" \
  -d "csrfmiddlewaretoken=$(csrf)&$AUTHZ&allow=Authorize" "$IDP/oauth/authorize?$AUTHZ" \
  | sed -n 's/.*[?&]code=\([^&]*\).*/\1/p')
test -n "$ROOT_CODE" || { echo "no root code: is alice's password right?" >&2; exit 1; }

# 2. The planner agent's hop: previous code + a proof signed with planner's registered key.
eval "$("$PY" -m chain_grant.client pkce | sed 's/^/NEXT_/')"
PROOF=$("$PY" -m chain_grant.client proof --key "$VAR/agents/planner.json" --sub planner \
  --aud "$IDP/oauth" --code "$ROOT_CODE" --message "Plan the answer")
HOP=$(curl -s "${CLIENT_AUTH[@]}" --data-urlencode "client_assertion=$(assertion)" "$IDP/oauth/token" \
  -d grant_type=code_chain --data-urlencode "authorization_code=$ROOT_CODE" \
  --data-urlencode "id_token=$PROOF" -d "code_challenge=$NEXT_CODE_CHALLENGE&code_challenge_method=S256")
echo "code_chain response: $HOP" | sed 's/"authorization_code": "[^"]*"/"authorization_code": "…"/'
PLANNER_CODE=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["authorization_code"])' "$HOP")

# 3. Exchange the planner's code (its own PKCE verifier), then introspect the token.
TOKEN=$(curl -s "${CLIENT_AUTH[@]}" --data-urlencode "client_assertion=$(assertion)" "$IDP/oauth/token" \
  -d grant_type=authorization_code \
  --data-urlencode "code=$PLANNER_CODE" -d "redirect_uri=$REDIRECT&code_verifier=$NEXT_CODE_VERIFIER")
ACCESS=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["access_token"])' "$TOKEN")
echo "introspection: $(curl -s "${CLIENT_AUTH[@]}" --data-urlencode "client_assertion=$(assertion)" \
  "$IDP/oauth/introspect" -d "token=$ACCESS")"

# 4. RFC 8693 token exchange: the planner's token (subject_token) and the researcher's
#    actor_token (signed with its registered key, bound to that token by ath) give the
#    researcher its own token: a new step of the same chain, depth 2.
ACTOR=$("$PY" -m chain_grant.client actor-token --key "$VAR/agents/researcher.json" --sub researcher \
  --aud "$IDP/oauth" --subject-token "$ACCESS" --message "Research the plan")
EXCHANGED=$(curl -s "${CLIENT_AUTH[@]}" --data-urlencode "client_assertion=$(assertion)" "$IDP/oauth/token" \
  -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
  --data-urlencode "subject_token=$ACCESS" -d subject_token_type=urn:ietf:params:oauth:token-type:access_token \
  --data-urlencode "actor_token=$ACTOR" -d actor_token_type=urn:ietf:params:oauth:token-type:jwt -d scope=read)
echo "token exchange response: $EXCHANGED" | sed 's/"access_token": "[^"]*"/"access_token": "…"/'
RESEARCHER=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["access_token"])' "$EXCHANGED")
echo "exchanged introspection: $(curl -s "${CLIENT_AUTH[@]}" --data-urlencode "client_assertion=$(assertion)" \
  "$IDP/oauth/introspect" -d "token=$RESEARCHER")"
