"""The HTTP front door: ``proj api`` lets any app, in any language, and any SaaS webhook hand
proj work and follow it (:mod:`proj.api.app`). It sits beside the CLI, on top of everything
else: it submits batches through :func:`proj.batch.submit.asubmit` and tasks through Celery,
as a Python caller would."""
