"""The simulated provider: an OpenAI-compatible chat endpoint and JSON lookups on loopback."""
