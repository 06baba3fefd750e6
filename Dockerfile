# One image for every proj service: workers, Flower, proj metrics (and the simulator).
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROJ_STATE_DIR=/var/lib/proj
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proj ./proj
COPY config ./config
# The code stays root's and read-only; the one writable place is the state directory, owned
# by the user the services run as (a named volume mounted there starts with its ownership).
RUN pip install ".[postgres]" \
    && useradd --create-home --uid 10001 proj \
    && mkdir -p /var/lib/proj && chown proj:proj /var/lib/proj && chmod 0700 /var/lib/proj
USER proj
CMD ["celery", "-A", "proj", "worker", "-Q", "bulk"]
