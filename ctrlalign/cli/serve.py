"""``ctrlalign serve``: a run behind OpenAI-compatible HTTP, preference and alpha per request."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from ctrlalign.cli.flags import add_device_flags, add_fields_flags, fields_config, placement


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ctrlalign.inference.serving.config import API_KEY_ENV, ServeConfig

    parser = sub.add_parser(
        "serve", help="serve a run over OpenAI-compatible HTTP, preference and alpha per request"
    )
    parser.add_argument("--run", required=True, help="run directory made by `ctrlalign train`")
    add_fields_flags(parser, ServeConfig)
    add_device_flags(parser)
    parser.set_defaults(func=run, api_key=os.environ.get(API_KEY_ENV))


def _exit_quietly(signum, frame) -> None:
    """uvicorn re-raises the signal it drained on; once drained, leave with status 0."""
    raise SystemExit(0)


def _loader(args: argparse.Namespace, config, name: str, state: dict, server) -> threading.Thread:
    """Load in the background so /health can answer 503 meanwhile (probes see a server
    that is starting, not a dead port); a load that fails stops the server."""
    from ctrlalign.inference.serving.engines import resolve_engine
    from ctrlalign.inference.serving.service import Service
    from ctrlalign.model.rundir import load_run

    def load() -> None:
        try:
            started = time.monotonic()
            loaded = load_run(args.run, **placement(args))
            device = next(loaded.model.parameters()).device
            engine = resolve_engine(config.engine, device)
            options = config.engine_options()
            if engine == "vllm":
                options |= config.vllm_options(args.run, on_cpu=device.type == "cpu")
            state["service"] = Service(
                loaded,
                name,
                max_new_tokens=config.max_new_tokens,
                max_n=config.max_n,
                engine=engine,
                **options,
            )
            took = time.monotonic() - started
            print(f"ready: {name} on {engine} ({device}) in {took:.1f} s", flush=True)
        except Exception as err:  # the server cannot serve: say why and stop it
            state["error"] = err
            server.should_exit = True

    return threading.Thread(target=load, name="ctrlalign-load", daemon=True)


def run(args: argparse.Namespace) -> int:
    from ctrlalign.inference.serving.app import build_app
    from ctrlalign.inference.serving.config import ServeConfig
    from ctrlalign.inference.serving.server import bind, uvicorn_server
    from ctrlalign.model.rundir import read_run_info

    info = read_run_info(args.run)
    config = fields_config(args, ServeConfig)
    name = config.name or Path(args.run).resolve().name
    state: dict = {"service": None, "error": None}
    app = build_app(
        lambda: state["service"],
        api_key=config.api_key or None,
        max_body_bytes=config.max_body_bytes,
        drain_timeout_s=config.drain_timeout,
    )
    server = uvicorn_server(app, config.drain_timeout, access_log=config.access_log)
    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    prefs = ", ".join(info.get("preferences") or []) or "none"
    print(f"serving {name} on http://{host}:{port}/v1 (preferences: {prefs})", flush=True)
    _loader(args, config, name, state, server).start()
    signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        if state["service"] is not None:
            state["service"].close(config.drain_timeout)
    if state["error"] is not None:
        print(
            f"ctrlalign serve: error: could not load {args.run}: {state['error']}", file=sys.stderr
        )
        return 2
    return 0
