"""What the deployment declares beside its settings: the dependencies it calls
(config/dependencies.toml) and the queues its work goes to, with the triage rules
(config/queues.toml). A mixin of :class:`proj.settings.Settings`, which loads both when it is
built; errors name the declaration, the field and the value."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from proj import dependencies, queues
from proj.dependencies import Dependency
from proj.errors import ConfigError
from proj.queues import Queue, QueueConfig
from proj.settings.fields import env_name

if TYPE_CHECKING:
    from proj.settings.calls import ProviderSettings
    from proj.settings.messaging import QueueSettings


#: Settings fields that stand for a dependency's environment variable.
_DEPENDENCY_FIELDS = (
    ("providers", "provider_base_url"),
    ("providers", "provider_api_key"),
    ("providers", "lookup_base_url"),
    ("providers", "lookup_api_key"),
    ("results", "notify_webhook_url"),
)


def _read(path: Path | None, variable: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as err:
        raise ValueError(f"{variable}: cannot read {str(path)!r}: {err.strerror}") from None


class Declarations:
    """The declared dependencies and queues of a :class:`proj.settings.Settings`."""

    if TYPE_CHECKING:
        providers: ProviderSettings
        queues: QueueSettings
        _deps: dict[str, Dependency]
        _queues: QueueConfig

        def _check_breaker(self, name: str, where: str) -> None: ...

    def _resolve_dependencies(self) -> None:
        """Load the declarations (proj's, the deployment's file, PROJ_DEPENDENCIES) and take
        their URLs and keys from the environment (the settings fields when set)."""
        p = self.providers
        shipped = resources.files("proj.config").joinpath("dependencies.toml").read_text()
        user = _read(p.dependencies_file, "PROJ_DEPENDENCIES_FILE")
        environ = dict(os.environ)
        for section, field in _DEPENDENCY_FIELDS:
            value = getattr(getattr(self, section), field)
            if value is not None:
                env = env_name(type(getattr(self, section)), field)
                environ[env] = value.get_secret_value() if isinstance(value, SecretStr) else value
        try:
            decls = dependencies.declarations(shipped, user, p.dependencies_env)
            self._deps = dependencies.resolve(decls, environ, timeout_s=p.http_timeout_s)
        except dependencies.DependencyError as err:
            raise ValueError(str(err)) from None
        for name in self._deps:
            self._check_breaker(name, f"dependency {name!r}: breaker.")

    # --- declared dependencies -------------------------------------------------------------
    @property
    def dependencies(self) -> dict[str, Dependency]:
        """Every declared dependency, resolved against the environment."""
        return dict(self._deps)

    def dependency(self, name: str) -> Dependency:
        """The enabled dependency ``name`` (``source.<x>``: the ``source`` declaration), or
        :class:`ConfigError` naming the known ones."""
        dep = self._deps.get(name)
        if dep is None and "." in name:
            parent = self._deps.get(name.split(".", 1)[0])
            dep = parent.named(name) if parent is not None else None
        if dep is None:
            known = ", ".join(sorted(self._deps)) or "none"
            raise ConfigError(
                f"no dependency named {name!r}; declared: {known} (declare it in "
                "PROJ_DEPENDENCIES_FILE or PROJ_DEPENDENCIES)"
            )
        if not dep.enabled:
            raise ConfigError(f"dependency {name!r} is switched off in this deployment")
        return dep

    def dependency_problems(self) -> list[str]:
        """What keeps an enabled, required dependency from working (checked at worker start)."""
        return dependencies.problems(self._deps)

    def dependency_breakers(self) -> list[str]:
        """Breakers every deployment has: one per enabled dependency with a fixed host
        (optional ones once configured)."""
        return sorted(
            n
            for n, d in self._deps.items()
            if d.enabled and not d.any_host and (d.base_url is not None or not d.optional)
        )

    def _resolve_queues(self) -> None:
        """Load the declared queues and triage rules (proj's, the deployment's file, then
        PROJ_QUEUES and PROJ_TRIAGE_RULES); the urgent and bulk queues always exist."""
        q = self.queues
        shipped = resources.files("proj.config").joinpath("queues.toml").read_text()
        try:
            config = queues.load(
                shipped,
                _read(q.queues_file, "PROJ_QUEUES_FILE"),
                q.queues_env,
                q.triage_rules_env,
                required={q.urgent_queue: "urgent", q.bulk_queue: "normal"},
            )
        except queues.QueueError as err:
            raise ValueError(str(err)) from None
        for urgency, name in q.triage_queue_by_urgency.items():
            if name not in config.queues:
                raise ValueError(
                    f"PROJ_TRIAGE_QUEUE_BY_URGENCY[{urgency!r}] names no declared queue, got "
                    f"{name!r} (declared: {config.known()})"
                )
        self._queues = config

    # --- declared queues -------------------------------------------------------------------
    @property
    def queue_config(self) -> QueueConfig:
        """Every declared queue and the triage rules."""
        return self._queues

    def queue(self, name: str) -> Queue:
        """The declared queue ``name``, or :class:`ConfigError` naming the declared ones."""
        try:
            return self._queues.get(name)
        except queues.QueueError as err:
            raise ConfigError(f"{err} (declare it in PROJ_QUEUES_FILE or PROJ_QUEUES)") from None

    def model_for(self, wanted: str | None) -> str | None:
        """A model as a rule or queue names it: ``small`` and ``large`` are the settings'."""
        if wanted == "small":
            return self.queues.model_small
        if wanted == "large":
            return self.queues.model_large
        return wanted
