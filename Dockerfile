# One image for the web server, the Celery worker and beat (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PUMPCLINIC_VAR_DIR=/app/var

WORKDIR /app

RUN useradd --system --create-home --uid 10001 --user-group app

# Dependencies first, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY clinic/__init__.py clinic/__init__.py
COPY pumps/__init__.py pumps/__init__.py
RUN pip install .

COPY . .
# Static files are collected at build time (whitenoise serves them, hashed and compressed);
# the throwaway key and hosts exist only for this step.
RUN pip install --no-deps . \
    && DJANGO_DEBUG=false DJANGO_SECRET_KEY=collectstatic-only DJANGO_ALLOWED_HOSTS=localhost \
       python manage.py collectstatic --no-input --verbosity 0 \
    && mkdir -p /app/var \
    && chown -R app:app /app/var

USER app
EXPOSE 8000

CMD ["gunicorn", "clinic.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
