#!/bin/bash
# Follow the README in a fresh venv: pip install the wheel with [api], then Corp's IdP
# (tests/dot_idp/after, copied standalone) through the README's steps to its first hop. Prints
# the seconds each part took. Usage: bash bench/plug_in.sh (needs the network for PyPI).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
mkdir -p $WORK/corp/tests
start=$(date +%s.%N)
python3 -m venv $WORK/venv
$WORK/venv/bin/pip install -q "$REPO[api]" dj-database-url 2>&1 | grep -v "WARNING: Location" || true
installed=$(date +%s.%N)
cp -r $REPO/tests/dot_idp $WORK/corp/tests/ && touch $WORK/corp/tests/__init__.py
openssl genrsa -out $WORK/corp/oidc.pem 2048 2>/dev/null
export PYTHONPATH=$WORK/corp DJANGO_SETTINGS_MODULE=tests.dot_idp.after.settings CORP_OIDC_KEY=$WORK/corp/oidc.pem
export DATABASE_URL=sqlite:///$WORK/corp/db.sqlite3
cd $WORK/corp
DA=$WORK/venv/bin/django-admin
$DA migrate -v0
# The IdP's existing state (not part of the README): a person and its web app.
$DA shell -c "
from django.contrib.auth.models import User; from oauth2_provider.models import Application
u = User.objects.create_user('alice', 'alice@corp.example', 'pw')
Application.objects.create(client_id='webapp', client_secret='s3cret', name='Web app', client_type='confidential',
  authorization_grant_type='authorization-code', redirect_uris='https://webapp.corp.example/callback', skip_authorization=True, user=u)"
ready=$(date +%s.%N)
$DA check
$DA chain_grant_client enable webapp
$DA chain_grant_agent keygen planner --public planner.pub.jwk
$DA chain_grant_agent add planner --key planner.pub.jwk --application webapp --scopes "openid read"
$DA shell -c "
import base64, hashlib, json, subprocess
from urllib.parse import urlencode, urlsplit, parse_qs
from django.contrib.auth.models import User
from django.test import Client
from chain_grant.client.pkce import pkce_pair
c = Client(); c.force_login(User.objects.get(username='alice'))
v, ch = pkce_pair()
q = urlencode({'client_id': 'webapp', 'response_type': 'code', 'scope': 'openid read', 'redirect_uri': 'https://webapp.corp.example/callback', 'code_challenge': ch, 'code_challenge_method': 'S256', 'state': 's'})
code = parse_qs(urlsplit(c.get('/o/authorize/?' + q)['Location']).query)['code'][0]
proof = subprocess.check_output(['$WORK/venv/bin/python', '-m', 'chain_grant.client', 'proof', '--key', 'planner.key.pem', '--sub', 'planner', '--aud', 'http://testserver/o', '--code', code], text=True).strip()
v2, ch2 = pkce_pair()
auth = 'Basic ' + base64.b64encode(b'webapp:s3cret').decode()
r = c.post('/o/token/', {'grant_type': 'code_chain', 'authorization_code': code, 'id_token': proof, 'code_challenge': ch2, 'code_challenge_method': 'S256'}, HTTP_AUTHORIZATION=auth)
print('first hop:', r.status_code, sorted(r.json()))
assert r.status_code == 200
"
done=$(date +%s.%N)
python3 -c "print(f'pip install: {$installed-$start:.0f} s; README steps to first hop: {$done-$ready:.0f} s; total: {($done-$start)/60:.1f} min')"
