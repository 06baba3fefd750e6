"""Every pipeline by name: each module of :mod:`proj.pipelines` that defines ``PIPELINE``.
Adding a pipeline is adding that module."""

from __future__ import annotations

import functools
import importlib
import pkgutil

from proj.pipelines.definition import Pipeline


@functools.cache
def pipelines() -> dict[str, Pipeline]:
    """Name -> pipeline, found once per process."""
    import proj.pipelines as package

    found: dict[str, Pipeline] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        pipeline = getattr(module, "PIPELINE", None)
        if isinstance(pipeline, Pipeline):
            found[pipeline.name] = pipeline
    return found


def get(name: str) -> Pipeline:
    try:
        return pipelines()[name]
    except KeyError:
        raise ValueError(
            f"unknown pipeline {name!r}; choose one of {sorted(pipelines())}"
        ) from None
