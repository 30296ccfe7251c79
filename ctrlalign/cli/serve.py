"""``ctrlalign serve``: a run behind OpenAI-compatible HTTP, preference and alpha per request."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctrlalign.cli.flags import finite_float


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve", help="serve a run over OpenAI-compatible HTTP, preference and alpha per request"
    )
    parser.add_argument("--run", required=True, help="run directory made by `ctrlalign train`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    parser.add_argument("--name", help="model name in responses (default: the run's folder name)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="cap on max_tokens")
    parser.add_argument("--max-batch-size", type=int, default=16, help="requests per batch")
    parser.add_argument(
        "--batch-wait-ms",
        type=finite_float,
        default=20.0,
        help="how long a batch waits for more requests before it starts",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ctrlalign.inference.serving import Service, make_server
    from ctrlalign.model.rundir import load_run, read_run_info

    read_run_info(args.run)
    if args.max_batch_size < 1 or args.max_new_tokens < 1 or args.batch_wait_ms < 0:
        raise ValueError("--max-batch-size and --max-new-tokens must be >= 1, --batch-wait-ms >= 0")
    run = load_run(args.run)
    name = args.name or Path(args.run).resolve().name
    service = Service(
        run, name, args.max_new_tokens, args.max_batch_size, args.batch_wait_ms / 1000
    )
    server = make_server(service, args.host, args.port)
    host, port = server.server_address[:2]
    prefs = ", ".join(run.preferences) or "none"
    print(f"serving {name} on http://{host}:{port}/v1 (preferences: {prefs})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.batcher.close()
    return 0
