"""``python -m proj.sim``: run the simulated provider (``proj sim`` is the same)."""

from __future__ import annotations

import argparse
import json
import os
import secrets

from proj.sim.config import ADMIN_KEY_ENV, ADMIN_KEY_HEADER, SimConfig
from proj.sim.server import SimState, serve


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="proj sim",
        description=f"Run the simulated provider. The admin API takes the key in {ADMIN_KEY_ENV} "
        f"(header {ADMIN_KEY_HEADER}); without it, one is made up and printed.",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8900)
    ap.add_argument("--config", default=None, help="JSON SimConfig, e.g. '{\"default\": {...}}'.")
    ap.add_argument(
        "--require-key-env",
        default=None,
        help="Require 'Bearer <key>' where the key is read from this env var.",
    )
    args = ap.parse_args(argv)

    config = SimConfig.model_validate(json.loads(args.config)) if args.config else SimConfig()
    key = os.environ.get(args.require_key_env) if args.require_key_env else None
    admin_key = os.environ.get(ADMIN_KEY_ENV)
    if not admin_key:
        admin_key = secrets.token_urlsafe(24)
        print(f"admin key ({ADMIN_KEY_HEADER}): {admin_key}", flush=True)
    serve(args.host, args.port, SimState(config, api_key=key, admin_key=admin_key))


if __name__ == "__main__":
    main()
