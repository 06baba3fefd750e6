"""``python -m proj.sim``: run the simulated provider (``proj sim`` is the same)."""

from __future__ import annotations

import argparse
import json

from proj.sim.config import SimConfig
from proj.sim.server import SimState, serve


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="proj sim", description="Run the simulated provider.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8900)
    ap.add_argument("--config", default=None, help="JSON SimConfig, e.g. '{\"default\": {...}}'.")
    ap.add_argument(
        "--require-key-env",
        default=None,
        help="Require 'Bearer <key>' where the key is read from this env var.",
    )
    args = ap.parse_args(argv)
    import os

    config = SimConfig.model_validate(json.loads(args.config)) if args.config else SimConfig()
    key = os.environ.get(args.require_key_env) if args.require_key_env else None
    serve(args.host, args.port, SimState(config, api_key=key))


if __name__ == "__main__":
    main()
