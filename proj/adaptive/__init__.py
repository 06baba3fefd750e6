"""The adaptive controller's worker side: the controller a worker runs every tick
(:mod:`.controller`) and the prefork pool resizer (:mod:`.poolsize`). The decisions they act on
are pure rules in :mod:`proj.resilience.concurrency` and :mod:`proj.resilience.outcomes`."""
