"""proj: parallel AI and HTTP calls on Celery that survive their providers' bad days."""

from proj.app import app

__all__ = ["app"]
__version__ = "0.1.0"
