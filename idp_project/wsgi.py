import os

from django.core.wsgi import get_wsgi_application

from chain_grant.middleware import guard_wsgi

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "idp_project.settings")
# guard_wsgi: Django raises building the request for some Content-Type charsets (a 500
# before any middleware); chain_grant.middleware.RequestGuardMiddleware answers a 400.
application = guard_wsgi(get_wsgi_application())
