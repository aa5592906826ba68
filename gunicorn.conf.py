"""gunicorn settings, read from the working directory (the image's /app) by default.

- The access log prints the request path without its query string (``%(U)s``, not the
  request line ``%(r)s``) and no referrer: search terms and names never reach a log.
- Before any worker starts, Django's system checks run; under production settings they
  refuse to start without collected static files, ``DJANGO_SECRET_KEY`` or
  ``DJANGO_ALLOWED_HOSTS`` (clinic/checks.py), with the message on stderr.
"""

access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)s'


def on_starting(server):
    from clinic.checks import refuse_to_start_unless_ready

    refuse_to_start_unless_ready()
