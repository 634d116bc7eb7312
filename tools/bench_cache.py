"""Cache lookup latency, printed as p50/p99 (for `make bench`; no assertions).

Measures, on loopback:
  memory-store   MemoryStore.get on a warm store (the in-process data structure)
  redis-backend  RedisBackend.get against a real redis-server (one GET, the breaker, the timeout)
  grpc-lookup    the Lookup RPC end to end against a cache process (memory, then redis)

Usage: python -m tools.bench_cache [--iterations N] [--redis-url URL] [--no-grpc]
Without --redis-url a redis-server is started on a free port and stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tollgate.cache.v1 import cache_pb2
from tollgate_cache.memory import MemoryStore
from tollgate_cache.redis_backend import RedisBackend
from tollgate_common.breaker import BreakerConfig, CircuitBreaker
from tollgate_common.cachekey import cache_key
from tools.stack import Stack, free_port

ENTRY = cache_pb2.Entry(
    body=b'{"object":"chat.completion","choices":[{"message":{"content":"' + b"x" * 1500 + b'"}}]}',
    model="gpt-4o-mini",
    usage=cache_pb2.Usage(prompt_tokens=40, completion_tokens=300),
    cost_usd=0.0002,
).SerializeToString()


def keys(n: int) -> list[str]:
    return [
        cache_key("gpt-4o-mini", {"messages": [{"content": str(i)}]}, "bench") for i in range(n)
    ]


def report(name: str, samples_ns: list[int]) -> None:
    ms = sorted(s / 1e6 for s in samples_ns)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{name:<22} n={len(ms):<6} p50={p50 * 1000:9.1f} us   p99={p99 * 1000:9.1f} us")


def bench_memory(iterations: int) -> None:
    ks = keys(10_000)
    store = MemoryStore(256 * 1024 * 1024, 1024 * 1024)
    for k in ks:
        store.set(k, ENTRY, 3600)
    samples = []
    for i in range(iterations):
        k = ks[i % len(ks)]
        t = time.perf_counter_ns()
        store.get(k)
        samples.append(time.perf_counter_ns() - t)
    report("memory-store get", samples)


async def bench_redis(url: str, iterations: int) -> None:
    backend = RedisBackend(
        url,
        timeout_seconds=0.2,
        max_entry_bytes=1024 * 1024,
        fallback_capacity=256 * 1024 * 1024,
        breaker=CircuitBreaker(BreakerConfig(consecutive_failures=3, cooldown_seconds=5)),
        on_evict=lambda reason, n: None,
    )
    ks = keys(1000)
    for k in ks:
        await backend.set(k, ENTRY, 600)
    samples = []
    for i in range(iterations):
        k = ks[i % len(ks)]
        t = time.perf_counter_ns()
        await backend.get(k)
        samples.append(time.perf_counter_ns() - t)
    await backend.clear()
    await backend.close()
    report("redis-backend get", samples)


def bench_grpc(name: str, env: dict[str, str], iterations: int, log_dir: Path) -> None:
    import grpc

    from tollgate.cache.v1 import cache_pb2_grpc

    stack = Stack(log_dir=log_dir / name, cache_env=env)
    try:
        stack.start_cache()
        md = stack.caller_metadata("orchestrator")  # Lookup and Store are for orchestrators
        with grpc.insecure_channel(f"127.0.0.1:{stack.ports.cache}") as ch:
            stub = cache_pb2_grpc.CacheStub(ch)
            ks = keys(200)
            entry = cache_pb2.Entry.FromString(ENTRY)
            for k in ks:
                stub.Store(cache_pb2.StoreRequest(key=k, entry=entry), timeout=5, metadata=md)
            samples = []
            for i in range(iterations):
                req = cache_pb2.LookupRequest(key=ks[i % len(ks)])
                t = time.perf_counter_ns()
                stub.Lookup(req, timeout=5, metadata=md)
                samples.append(time.perf_counter_ns() - t)
        report(f"grpc-lookup {name}", samples)
    finally:
        stack.stop()


@contextlib.contextmanager
def redis_server(url: str | None, tmp: Path) -> Iterator[str]:
    if url:
        yield url
        return
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found: run `make system-deps` or pass --redis-url")
    port = free_port()
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port, socket_timeout=0.5)
        for _ in range(100):
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    break
            time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--no-grpc", action="store_true", help="skip the end-to-end RPC runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp_dir:
        tmp = Path(tmp_dir)
        bench_memory(args.iterations * 10)
        with redis_server(args.redis_url, tmp) as url:
            asyncio.run(bench_redis(url, args.iterations))
            if not args.no_grpc:
                bench_grpc("memory", {}, args.iterations, tmp)
                redis_env = {"TOLLGATE_CACHE_BACKEND": "redis", "TOLLGATE_CACHE_REDIS_URL": url}
                bench_grpc("redis", redis_env, args.iterations, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
