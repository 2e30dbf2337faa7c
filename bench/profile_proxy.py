"""Where the balancer's CPU goes, proxy-bound: ``python bench/profile_proxy.py [--seconds 10]``.

Two nginx backends (bench_proxy.py's ``fast``), one ``ticslab balancer``, ``wrk -t1 -c32``,
and py-spy (``pip install py-spy``; a profiler, not a dependency of the lab) sampling the
balancer meanwhile. Prints each group's share of the samples, by the innermost frame (self)
and by any frame on the stack (inclusive), then the top functions by self time. Groups are by
source file: aiohttp, uvicorn, our protocol (services/protocol.py, uvicorn_adapter.py), our
upstream client (upstream.py), the rest of our proxy and balancer (services/balancer),
Starlette, the event loop (asyncio, uvloop), the rest.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from bench_proxy import PATH, start, wrk_run
from stack import start_balancer

GROUPS = (
    ("aiohttp", ("aiohttp/", "yarl/", "multidict/")),
    ("uvicorn", ("uvicorn/", "httptools/")),
    ("our protocol", ("services/protocol.py", "services/uvicorn_adapter.py")),
    ("our upstream client", ("services/balancer/upstream.py",)),
    ("our proxy and balancer", ("services/balancer/", "services/web.py", "services/common.py")),
    ("starlette", ("starlette/",)),
    ("event loop", ("asyncio/", "uvloop/")),
)


def group_of(frame: str) -> str:
    """The group of one py-spy frame, ``function (file:line)``."""
    for name, markers in GROUPS:
        if any(marker in frame for marker in markers):
            return name
    return "other"


def summarise(samples: Counter[str], top: int) -> None:
    """Print the groups' self and inclusive shares and the ``top`` functions by self time."""
    total = sum(samples.values())
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for stack, count in samples.items():
        frames = stack.split(";")
        own[group_of(frames[-1])] += count
        functions[frames[-1]] += count
        for group in {group_of(frame) for frame in frames[1:]}:
            inclusive[group] += count
    print(f"{total} samples; group: self % (inclusive %)")
    for group, count in own.most_common():
        share, whole = 100 * count / total, 100 * inclusive[group] / total
        print(f"  {group:<24} {share:5.1f} % ({whole:5.1f} %)")
    print(f"top {top} functions by self time:")
    for frame, count in functions.most_common(top):
        print(f"  {100 * count / total:5.1f} %  {frame}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="of load and sampling")
    parser.add_argument("--top", type=int, default=15, help="functions listed")
    parser.add_argument("--save", type=Path, help="also keep py-spy's raw (collapsed) stacks")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="profile-proxy-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        ports = [server.port for server in start("fast", folder, stack)]
        balancer = start_balancer(ports)
        stack.callback(balancer.close)
        url = balancer.url + PATH
        wrk_run(url, 32, 1)  # warm up
        load = threading.Thread(target=wrk_run, args=(url, 32, args.seconds + 2))
        load.start()
        out = folder / "profile.txt"
        command = [spy, "record", "--format", "raw", "--nonblocking", "--rate", "250"]
        command += ["--duration", str(int(args.seconds)), "-o", str(out)]
        subprocess.run([*command, "--pid", str(balancer.proc.pid)], check=True,
                       capture_output=True, timeout=args.seconds + 30)  # fmt: skip
        load.join()
        if args.save:
            shutil.copyfile(out, args.save)
        samples: Counter[str] = Counter()
        for line in out.read_text().splitlines():
            stack_text, _, count = line.rpartition(" ")
            samples[stack_text] += int(count)
    summarise(samples, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
