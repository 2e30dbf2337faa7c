"""Large and slow answers through the balancer: ``python bench/bench_streaming.py``.

Same run, same two backends (bench/stream_backend.py on 127.0.0.1, free ports), each figure
direct, through HAProxy (bench/haproxy.cfg.template) and through ``ticslab balancer``:
- a 100 MB download read as fast as curl can: rate, and the proxy's RSS growth (peak during
  the transfer minus before it, sampled every 5 ms from /proc);
- the same download read by a slow client (curl --limit-rate 25M): RSS growth, which shows
  that a slow reader holds the upstream back instead of filling the proxy's memory;
- time to first byte of a slow answer (headers at once, a byte a second), from curl's
  ``time_starttransfer``, median of 5.
Targets: rate >= 0.5 x HAProxy's; RSS growth under 50 MB; first byte within 50 ms of HAProxy.
Needs /usr/sbin/haproxy and curl. Every transfer is bounded by curl's --max-time.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from stack import ServiceProcess, free_port, report, start_balancer, start_haproxy

MB = 1_000_000
SIZE = 100 * MB


def start_backend() -> ServiceProcess:
    port = free_port()
    args = ["-m", "uvicorn", "--app-dir", str(Path(__file__).parent), "stream_backend:app"]
    args += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    return ServiceProcess(args, port, program=[sys.executable]).start()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


class PeakRss:
    """The highest RSS of ``pid`` while the ``with`` block runs."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.before = self.peak = rss_mb(pid) if pid else 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, rss_mb(self.pid))  # type: ignore[arg-type]

    def __enter__(self) -> PeakRss:
        if self.pid:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self.pid:
            self._thread.join()

    @property
    def growth(self) -> float:
        return self.peak - self.before


def curl(url: str, *flags: str) -> dict[str, float]:
    """One transfer to /dev/null: curl's own timings (seconds) and rate (bytes/s)."""
    out = ["%{http_code}", "%{size_download}", "%{speed_download}", "%{time_starttransfer}"]
    command = ["curl", "-s", "-o", "/dev/null", "--max-time", "60", "-w", " ".join(out)]
    done = subprocess.run([*command, *flags, url], capture_output=True, text=True, timeout=90)
    code, size, speed, first = done.stdout.split()
    if code != "200":
        raise RuntimeError(f"{url}: HTTP {code}")
    return {"size": float(size), "rate": float(speed), "first": float(first)}


def main() -> int:
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    processes: list[ServiceProcess] = []
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp:
        try:
            backends = [start_backend(), start_backend()]
            processes += backends
            ports = [backend.port for backend in backends]
            haproxy, _ = start_haproxy(ports, Path(tmp))
            balancer = start_balancer(ports)
            processes += [haproxy, balancer]
            targets = {
                "direct": (backends[0].url, None),
                "haproxy": (haproxy.url, haproxy.proc.pid),
                "balancer": (balancer.url, balancer.proc.pid),
            }
            for name, (base, pid) in targets.items():
                curl(base + "/bytes/1000000")  # warm up
                with PeakRss(pid) as fast:
                    rate = curl(base + f"/bytes/{SIZE}")
                with PeakRss(pid) as slow:
                    curl(base + f"/bytes/{SIZE}", "--limit-rate", "25M")
                first = [curl(base + "/drip/2")["first"] for _ in range(5)]
                rows[name] = {
                    "rate": rate["rate"] / MB,
                    "rss_fast": fast.growth,
                    "rss_slow": slow.growth,
                    "first_ms": statistics.median(first) * 1000,
                }
        finally:
            for process in processes:
                process.close()
    print("\n100 MB download (MB/s, RSS growth MB) and first byte of a slow answer (ms)")
    print("target   |  MB/s | RSS fast client | RSS slow client | first byte")
    for name, row in rows.items():
        print(
            f"{name:<8} | {row['rate']:5.0f} | {row['rss_fast']:15.1f} | {row['rss_slow']:15.1f}"
            f" | {row['first_ms']:8.1f}"
        )
    ours, theirs = rows["balancer"], rows["haproxy"]
    ratio = ours["rate"] / theirs["rate"]
    growth = max(ours["rss_fast"], ours["rss_slow"])
    later = ours["first_ms"] - theirs["first_ms"]
    checks = [
        (f"100 MB rate: {ratio:.2f}x HAProxy's (target >= 0.5x)", ratio >= 0.5),
        (f"balancer RSS growth: {growth:.1f} MB (target < 50 MB)", growth < 50),
        (f"first byte: {later:+.1f} ms after HAProxy's (target <= 50 ms)", later <= 50),
    ]
    return report(checks)


if __name__ == "__main__":
    sys.exit(main())
