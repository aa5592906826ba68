import os

from django.core.wsgi import get_wsgi_application

from clinic.checks import refuse_to_start_unless_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinic.settings")
refuse_to_start_unless_ready()  # production without static files, secret key or hosts: a clear exit
application = get_wsgi_application()
