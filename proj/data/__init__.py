"""Data shipped with proj: the demo's sample leads."""
