"""Load test of a TF Serving model server: a bounded number of requests at a concurrency.

    python serving/loadtest.py --model sst2                                # gRPC, localhost:8500
    python serving/loadtest.py --server http://localhost:8501 --model sst2 --requests 500 --concurrency 16

Each request is `tfsft.serving.client.Client.predict(model, texts)` with
--batch-size texts. The run stops after --requests requests or --max-seconds,
whichever comes first, and prints p50/p99 latency and throughput (--json: one
JSON object). One untimed request first fetches the model's signature.
Exit status: 0, 1 when a request failed, 2 when the first one did.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tfsft.serving.client import Client, ServingError


def run_load(client: Client, model: str, texts: list[str], requests: int, concurrency: int,
             max_seconds: float) -> dict:
    """Sends up to `requests` requests from `concurrency` threads; latency percentiles and throughput."""
    client.predict(model, texts)
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + max_seconds

    def one(_):
        if time.monotonic() > deadline:
            return
        start = time.perf_counter()
        try:
            client.predict(model, texts)
        except ServingError as e:
            errors.append(str(e))
            return
        latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    seconds = time.perf_counter() - started
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000 if latencies else (float("nan"), float("nan"))
    return {"requests": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else None,
            "concurrency": concurrency, "batch_size": len(texts), "seconds": round(seconds, 3),
            "p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2),
            "requests_per_s": round(len(latencies) / seconds, 2),
            "rows_per_s": round(len(latencies) * len(texts) / seconds, 2)}


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0. Received: {text}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="localhost:8500", help="HOST:PORT (gRPC) or http://HOST:PORT (REST)")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--text", action="append", help="input text (repeatable; default: one sample sentence)")
    parser.add_argument("--batch-size", type=positive(int), default=1, help="texts per request (cycled from --text)")
    parser.add_argument("--requests", type=positive(int), default=200, help="most requests to send")
    parser.add_argument("--concurrency", type=positive(int), default=8, help="requests in flight")
    parser.add_argument("--max-seconds", type=positive(float), default=60.0, help="stop sending after this long")
    parser.add_argument("--rest-format", choices=["instances", "inputs"], default="instances")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    sample = args.text or ["a gripping, beautifully acted film"]
    texts = [sample[i % len(sample)] for i in range(args.batch_size)]
    with Client(args.server, rest_format=args.rest_format) as client:
        try:
            result = run_load(client, args.model, texts, args.requests, args.concurrency, args.max_seconds)
        except ServingError as e:
            print(f"loadtest: error: {e}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['requests']} requests of {result['batch_size']} rows ({result['errors']} errors) at "
              f"concurrency {result['concurrency']} in {result['seconds']} s: p50 {result['p50_ms']} ms, "
              f"p99 {result['p99_ms']} ms, {result['requests_per_s']} requests/s, {result['rows_per_s']} rows/s")
        if result["first_error"]:
            print(f"first error: {result['first_error']}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
