# One image for every proj service: workers, Flower (and the simulator).
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proj ./proj
COPY config ./config
RUN pip install . && useradd --create-home --uid 10001 proj
USER proj
CMD ["celery", "-A", "proj", "worker", "-Q", "bulk"]
