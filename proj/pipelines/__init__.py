"""The seed pipelines. Each ``build(...)`` validates its input and returns a plan whose
``signature`` starts it with ``.delay()`` / ``apply_async()``."""
