"""``ctrlalign serve``: a run behind OpenAI-compatible HTTP, preference and alpha per request."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

from ctrlalign.cli.flags import add_device_flags, finite_float, placement

API_KEY_ENV = "CTRLALIGN_API_KEY"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve", help="serve a run over OpenAI-compatible HTTP, preference and alpha per request"
    )
    parser.add_argument("--run", required=True, help="run directory made by `ctrlalign train`")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    parser.add_argument("--name", help="model name in responses (default: the run's folder name)")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=512,
        help="cap on a request's max_tokens, and its default when it sends none",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=32,
        help="answers decoded together in one step (a request with n choices counts n)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=256,
        help="requests that may wait to join the batch; one more gets HTTP 429",
    )
    parser.add_argument("--max-n", type=int, default=8, help="cap on a request's n (choices)")
    parser.add_argument(
        "--max-prefill-tokens",
        type=int,
        default=4096,
        help="prompt tokens one step prefills at most (one request always joins): a burst of "
        "arrivals then joins over several steps while the running answers keep advancing",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=finite_float,
        default=20.0,
        help="how long an idle server waits for more requests before it starts a batch",
    )
    parser.add_argument(
        "--scheduler",
        choices=["continuous", "static"],
        default="continuous",
        help="continuous: requests join and leave the running batch at every step; static: a "
        "batch starts only when the previous one has finished (for comparison)",
    )
    add_device_flags(parser)
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require `Authorization: Bearer KEY` on every route but /health "
        f"(default: ${API_KEY_ENV}; unset: no key)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="request bodies over this size get HTTP 413 without being read whole",
    )
    parser.add_argument(
        "--drain-timeout",
        type=finite_float,
        default=30.0,
        help="on SIGTERM, seconds to finish requests in flight before cancelling them",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log one line per request (method, path, status) to stderr, as uvicorn does",
    )
    parser.set_defaults(func=run)


def _exit_quietly(signum, frame) -> None:
    """uvicorn re-raises the signal it drained on; once drained, leave with status 0."""
    raise SystemExit(0)


def run(args: argparse.Namespace) -> int:
    from ctrlalign.inference.serving import Service, bind, build_app, uvicorn_server
    from ctrlalign.model.rundir import load_run, read_run_info

    info = read_run_info(args.run)
    positive = (
        "max_batch_size",
        "max_new_tokens",
        "max_queue",
        "max_n",
        "max_body_bytes",
        "max_prefill_tokens",
    )
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if args.batch_wait_ms < 0 or args.drain_timeout < 0:
        raise ValueError("--batch-wait-ms and --drain-timeout must be >= 0")
    name = args.name or Path(args.run).resolve().name
    state: dict = {"service": None, "error": None}
    app = build_app(
        lambda: state["service"],
        api_key=args.api_key or None,
        max_body_bytes=args.max_body_bytes,
        drain_timeout_s=args.drain_timeout,
    )
    server = uvicorn_server(app, args.drain_timeout, access_log=args.access_log)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]

    def load() -> None:
        """Load in the background so /health can answer 503 meanwhile (probes see a
        server that is starting, not a dead port)."""
        try:
            started = time.monotonic()
            loaded = load_run(args.run, **placement(args))
            device = next(loaded.model.parameters()).device
            state["service"] = Service(
                loaded,
                name,
                max_new_tokens=args.max_new_tokens,
                max_batch_size=args.max_batch_size,
                batch_wait_s=args.batch_wait_ms / 1000,
                max_queue=args.max_queue,
                max_n=args.max_n,
                scheduler=args.scheduler,
                max_prefill_tokens=args.max_prefill_tokens,
            )
            print(
                f"ready: {name} loaded on {device} in {time.monotonic() - started:.1f} s",
                flush=True,
            )
        except Exception as err:  # the server cannot serve: say why and stop it
            state["error"] = err
            server.should_exit = True

    prefs = ", ".join(info.get("preferences") or []) or "none"
    print(f"serving {name} on http://{host}:{port}/v1 (preferences: {prefs})", flush=True)
    threading.Thread(target=load, name="ctrlalign-load", daemon=True).start()
    signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        if state["service"] is not None:
            state["service"].close(args.drain_timeout)
    if state["error"] is not None:
        print(
            f"ctrlalign serve: error: could not load {args.run}: {state['error']}", file=sys.stderr
        )
        return 2
    return 0
