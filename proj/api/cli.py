"""``proj api``: serve the HTTP front door; ``proj api key NAME``: make a key for it."""

from __future__ import annotations

import importlib
import os
import sys

import click
from rich.console import Console
from rich.markup import escape

from proj.errors import ConfigError
from proj.settings import get_settings

console = Console(soft_wrap=True, stderr=True)


def install(main: click.Group) -> None:
    @main.group(invoke_without_command=True)
    @click.option("--host", default=None, help="Address to listen on (PROJ_API_HOST).")
    @click.option("--port", type=int, default=None, help="Port (PROJ_API_PORT).")
    @click.option(
        "-I",
        "--include",
        multiple=True,
        help="Modules of your own tasks to import (as `celery worker -I`), so their exposed "
        "tasks can be enqueued.",
    )
    @click.pass_context
    def api(
        ctx: click.Context, host: str | None, port: int | None, include: tuple[str, ...]
    ) -> None:
        """Serve the HTTP API: submit batches and tasks, follow them, get called back."""
        if ctx.invoked_subcommand is not None:
            return
        import uvicorn

        from proj.api.app import create_app
        from proj.app import app as celery_app

        settings = get_settings()
        celery_app.loader.import_default_modules()  # proj's tasks and CELERY_IMPORTS
        if include and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `celery` does: your modules from here
        for module in include:
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise ConfigError(f"--include {module!r}: {err}") from None
        api_app = create_app(settings)
        keys = len(api_app.state.keys)
        host = host or settings.api.host
        port = settings.api.port if port is None else port
        console.print(f"proj api on http://{host}:{port} ({keys} API keys)")
        if not keys:
            console.print(
                f"[yellow]warning:[/] no API keys in {escape(str(settings.api.keys_path))}: "
                "every request will be refused; make one with `proj api key NAME`"
            )
        uvicorn.run(api_app, host=host, port=port, log_level="warning", access_log=False)

    @api.command("key")
    @click.argument("name")
    @click.option(
        "--scope",
        "scopes",
        multiple=True,
        default=("batches:write", "batches:read", "tasks:write", "tasks:read"),
        show_default=True,
        help="What the key may do (repeat; '*' also reads every caller's batches).",
    )
    @click.option("--rate-limit", default=None, help="Requests per period, e.g. 20/s.")
    @click.option(
        "--write", is_flag=True, help="Append the entry to the keys file (PROJ_API_KEYS_FILE)."
    )
    def key(name: str, scopes: tuple[str, ...], rate_limit: str | None, write: bool) -> None:
        """Make API key NAME: the key is printed once; only its hash is kept."""
        from proj.api.keys import new_key, parse_keys, toml_entry

        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"NAME: letters, digits, - and _ only, got {name!r}")
        secret = new_key()
        entry = toml_entry(name, secret, scopes, rate_limit)
        import tomllib

        parse_keys(tomllib.loads(entry)["keys"], where="the new key")  # scopes, rate checked
        path = get_settings().api.keys_path
        if write:
            from proj.api.keys import KeyRing

            KeyRing.load(path)  # the file is valid before we add to it
            with path.open("a") as f:
                f.write(("\n" if path.exists() and path.stat().st_size else "") + entry)
            console.print(f"added key {name!r} to {path}")
        else:
            console.print(f"# add to {path}:")
            click.echo(entry, err=True)
        click.echo(secret)
