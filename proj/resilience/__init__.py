"""Resilience: a failure-rate circuit breaker shared by all workers (more to come)."""
