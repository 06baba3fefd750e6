"""Celery configuration for proj (importable as ``proj.config``)."""
