"""``python -m tests.remote_rs.serve PORT``: migrate the resource server's own database
and serve it on 127.0.0.1:PORT (one thread: wsgiref), printing ``ready`` once listening."""

import os
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.remote_rs.settings")


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):  # no access log on the test's stderr
        pass


def main(port: int) -> None:
    import django
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    server = make_server("127.0.0.1", port, get_wsgi_application(), handler_class=QuietHandler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
