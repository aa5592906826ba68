"""Logging filter: no query string reaches a log line.

Search terms (a patient's name typed in the worklist search, ``?mrn=`` of the API) travel
in query strings, and the development server (``django.server``), ``django.request`` and
other loggers print request paths. ``RedactQueryStrings`` is attached to every handler in
settings and rewrites each record's message, replacing whatever follows a ``?`` in a
URL-like token with ``?…``. (gunicorn's access log is configured in ``gunicorn.conf.py``
to print the path without its query string.)
"""

from __future__ import annotations

import logging
import re

# A path or URL followed by a query string, up to the next space or quote.
_QUERY = re.compile(r"""(?P<path>(?:https?://[^\s"'?]*)?/[^\s"'?]*)\?[^\s"']*""")
REDACTED = "?…"


def redact(text: str) -> str:
    return _QUERY.sub(lambda m: m.group("path") + REDACTED, text)


class RedactQueryStrings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let the handler report it as it would
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True
