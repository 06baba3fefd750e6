"""The guarded client layer: breakers, global rate limits and guarded HTTP clients that any
code can use (``proj.breaker``, ``proj.limiter``, ``proj.http``, ``proj.ahttp``), and the
outcome signal the adaptive controller hears. Imports rules and stores, never Celery."""
