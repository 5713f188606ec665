#!/usr/bin/env python3
"""Hostile input, measured: for every public endpoint and worst shape (tests/hostile.py), the CPU
seconds and the peak memory growth of one request at 1 MB and at 30 MB, signed and unsigned.

    python3 dev.py bench --only hostile      (or: .venv/bin/python bench/hostile.py [--sizes 1,30])

Each case runs in a process of its own against a throwaway Redis (so that memory an earlier case
freed cannot hide this one's growth): the app is built, the body is built, the kernel's peak-RSS
mark is reset (/proc/self/clear_refs), the request is made with Flask's test client (the code
gunicorn runs, reading the body included), and CPU time and VmHWM − VmRSS-before are read. "kept"
is the RSS still held after the request once garbage is collected. Targets, at 30 MB: every shape
≤ 2 s of CPU and peak growth ≤ 3 × the body.
Results go to stdout as a Markdown table (BENCHMARKS.md keeps the last run).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _give_back_free_memory() -> None:
    """Return what building the body freed to the kernel, so the request cannot reuse it unseen."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def measure(size: int, redis_url: str, only: str) -> list[dict[str, object]]:
    """In this process: the cases at `size` bytes whose 'path shape signed' is `only` (exactly)."""
    sys.path.insert(0, str(ROOT))
    import redis

    from relay.app import create_app
    from relay.config import load_settings
    from tests.helpers import relay_env
    from tests.hostile import cases

    settings = load_settings(
        relay_env("http://127.0.0.1:9", REDIS_URL=redis_url, RELAY_MAX_REQUEST_BYTES=str(31457280))
    )
    client = create_app(settings).test_client()
    store = redis.Redis.from_url(redis_url)
    rows = []
    warm_ups = {f"{path} {shape} {signed}": build for path, shape, signed, build in cases(4096)}
    for path, shape, authenticated, build in cases(size):
        if f"{path} {shape} {authenticated}" != only:
            continue
        # The same request, small, first: what the first request of a process loads is not its cost.
        warm_up = warm_ups[only]()
        if warm_up is not None:
            client.post(path, **warm_up)
        store.flushdb()
        request = build()
        if request is None:
            continue
        body = len(request["data"])
        gc.collect()
        _give_back_free_memory()
        before = _status_kib("VmRSS")
        _reset_peak()
        cpu = time.process_time()
        response = client.post(path, **request)
        cpu = time.process_time() - cpu
        status = response.status_code
        peak = _status_kib("VmHWM") - before
        del response, request
        gc.collect()
        kept = _status_kib("VmRSS") - before
        rows.append({"size": size, "path": path, "shape": shape, "signed": authenticated, "status": status,
                     "body": body, "cpu": round(cpu, 3), "peak_kib": peak, "kept_kib": kept})  # fmt: skip
    return rows


def _start_redis(folder: str) -> tuple[subprocess.Popen[bytes], str]:
    sys.path.insert(0, str(ROOT))
    from tests.helpers import free_port

    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", folder], stdout=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.3)
    return process, f"redis://127.0.0.1:{port}/0"


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| endpoint | shape | signed | status | body MB | CPU s | peak RSS growth MB | × body | kept MB |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        body = int(r["body"])  # type: ignore[call-overload]
        peak = int(r["peak_kib"]) * 1024  # type: ignore[call-overload]
        lines.append(
            f"| `{r['path']}` | {r['shape']} | {'yes' if r['signed'] else 'no'} | {r['status']} | {body / MB:.1f} "
            f"| {r['cpu']:.2f} | {peak / MB:.0f} | {peak / body:.1f} | {int(r['kept_kib']) * 1024 / MB:.0f} |"  # type: ignore[call-overload]
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,30", help="body sizes in MB")
    parser.add_argument("--only", default="", help="only cases whose 'path shape' holds this text")
    parser.add_argument("--jobs", type=int, default=4, help="cases measured at once (each in its own process)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.redis, args.only)))
        return 0
    sys.path.insert(0, str(ROOT))
    from tests.hostile import cases

    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as folder:
        redis_process, redis_url = _start_redis(folder)

        def one(size: int, case: str, database: int) -> list[dict[str, object]]:
            # A fresh process per case: memory an earlier case freed would hide this one's growth.
            out = subprocess.run([sys.executable, __file__, "--child", str(size), "--only", case,
                                  "--redis", f"{redis_url[:-1]}{database}"], capture_output=True,
                                 cwd=ROOT, env={**os.environ, "LOG_LEVEL": "ERROR"})  # fmt: skip
            if out.returncode:
                raise SystemExit(f"{case} at {size} bytes failed:\n{out.stderr.decode()[-2000:]}")
            return json.loads(out.stdout)  # type: ignore[no-any-return]

        try:
            work = [(size, f"{path} {shape} {signed}")
                    for size in (int(s) * MB for s in args.sizes.split(","))
                    for path, shape, signed, _ in cases(1) if args.only in f"{path} {shape}"]  # fmt: skip
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                for found in pool.map(lambda item: one(item[1][0], item[1][1], item[0] % 16), enumerate(work)):
                    rows += found
        finally:
            redis_process.terminate()
    print(table(rows))
    ratio = {id(r): int(r["peak_kib"]) * 1024 / int(r["body"]) for r in rows}  # type: ignore[call-overload]
    cpu = max(rows, key=lambda r: float(r["cpu"]))  # type: ignore[arg-type]
    memory = max(rows, key=lambda r: ratio[id(r)])
    print(f"\nmost CPU: {cpu['cpu']} s ({cpu['path']} {cpu['shape']}, {cpu['body']} bytes)")
    print(
        f"most memory: {ratio[id(memory)]:.2f} × the body ({memory['path']} {memory['shape']}, {memory['body']} bytes)"
    )
    # The targets are for the largest size: at 1 MB a few megabytes of fixed cost (the parsed text,
    # what Redis stores) are several times the body, and are reported, not judged.
    largest = max(int(r["size"]) for r in rows)  # type: ignore[call-overload]
    judged = [r for r in rows if r["size"] == largest and int(r["status"]) != 413]  # type: ignore[call-overload]
    over = [r for r in judged if float(r["cpu"]) > 2 or ratio[id(r)] > 3]  # type: ignore[arg-type]
    print(f"over target at the largest size (> 2 s CPU or > 3 × body): {len(over)} of {len(judged)}")
    for r in over:
        print(f"  {r['path']} {r['shape']} signed={r['signed']}: {r['cpu']} s, {ratio[id(r)]:.1f} × body")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
