"""proj's Celery tasks."""
