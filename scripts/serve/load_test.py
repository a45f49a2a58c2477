#!/usr/bin/env python3
"""Load test of `infer serve`: starts the server on a fine-tuned run (loopback, a free port),
has N clients send photos to one endpoint as fast as it answers for a fixed time, then stops it
with SIGTERM. Once with batching (the run's `infer.batch_size`) and once without
(`--set infer.batch_size=1`), unless `--modes` says otherwise. Prints, per mode, requests/s,
p50 and p95 latency, errors and the server's peak RSS (VmHWM), and with `--json` writes them.

    python3 scripts/serve/load_test.py --checkpoint runs/finetune/<run> \\
        --binary target/release/infer --clients 16 --seconds 60

Bounded: loopback only, at most 64 clients and 600 s a mode. Standard library only.
"""
import argparse
import http.client
import json
import mimetypes
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

MAX_CLIENTS = 64
MAX_SECONDS = 600


def multipart(name: str, data: bytes) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        f"Content-Type: {kind}\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def start_server(binary: str, checkpoint: str, extra: list[str]) -> tuple[subprocess.Popen, int]:
    server = subprocess.Popen(
        [binary, "serve", "--addr", "127.0.0.1:0", "--checkpoint", checkpoint, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = server.stdout.readline().strip()
    prefix = "serve: listening on http://"
    if not line.startswith(prefix):
        server.kill()
        raise SystemExit(f"load test: the server did not start (said {line!r})")
    return server, int(line[len(prefix):].rsplit(":", 1)[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(port: int, endpoint: str, photos: list[tuple[str, bytes]], clients: int, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        i = k
        while time.monotonic() < deadline:
            name, data = photos[i % len(photos)]
            i += clients
            content_type, body = multipart(name, data)
            start = time.monotonic()
            try:
                conn.request("POST", endpoint, body=body, headers={"Content-Type": content_type})
                response = conn.getresponse()
                payload = response.read()
                ok = response.status == 200 and json.loads(payload).get("results")
                status = response.status
            except (OSError, http.client.HTTPException, ValueError) as e:
                ok, status = False, repr(e)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            elapsed = time.monotonic() - start
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors.append(str(status))
        conn.close()

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - began
    latencies.sort()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / wall,
        "p50_s": q[49],
        "p95_s": q[94],
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "wall_s": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a fine-tuning run directory")
    parser.add_argument("--binary", default="target/release/infer")
    parser.add_argument("--photos", default="data/samples", help="a folder of photos to send")
    parser.add_argument("--endpoint", default="/v1/score", choices=["/v1/score", "/v1/comment", "/v1/suggest"])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--modes", default="batched,unbatched", help="batched, unbatched or both")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        raise SystemExit(f"load test: 1..{MAX_CLIENTS} clients and up to {MAX_SECONDS} s")
    photos = [
        (p.name, p.read_bytes())
        for p in sorted(Path(args.photos).iterdir())
        if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")
    ]
    if not photos:
        raise SystemExit(f"load test: no photos in {args.photos}")
    results = []
    for mode in args.modes.split(","):
        extra = {"batched": [], "unbatched": ["--set", "infer.batch_size=1"]}[mode]
        server, port = start_server(args.binary, args.checkpoint, extra)
        try:
            # One request first, so the figures leave out the first call's one-off costs.
            name, data = photos[0]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            content_type, body = multipart(name, data)
            conn.request("POST", args.endpoint, body=body, headers={"Content-Type": content_type})
            conn.getresponse().read()
            conn.close()
            result = load(port, args.endpoint, photos, args.clients, args.seconds)
            result["peak_rss_mb"] = peak_rss_mb(server.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=600)
        result.update(mode=mode, endpoint=args.endpoint, clients=args.clients, seconds=args.seconds, exit_code=code)
        results.append(result)
        print(
            f"load test: {mode}: {result['requests']} requests, {result['requests_per_s']:.2f} requests/s, "
            f"p50 {result['p50_s']:.2f} s, p95 {result['p95_s']:.2f} s, errors {result['errors']}, "
            f"peak RSS {result['peak_rss_mb']:.0f} MB, exit {code}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    failed = any(r["errors"] or r["exit_code"] != 0 for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    if os.name != "posix":
        raise SystemExit("load test: reads /proc and sends SIGTERM; POSIX only")
    sys.exit(main())
