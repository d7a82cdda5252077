"""Instructions per proxied request, counted by callgrind: what each proxy costs, without the noise.

    python -m benchmarks.instructions        # about 6 minutes; installs valgrind (Debian) when missing

Time on a shared machine drifts by a fifth from one run to the next; the instructions a
process executes for a request do not (to a percent or two). Each server runs under
callgrind behind the same nginx upstream; after a warm-up, the count is zeroed, a fixed
number of keep-alive requests (50 connections) is sent, and the count is read. Kernel
time (the same two reads and two writes a request for every proxy here) is not counted.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks.measure import install_missing, wait_for
from benchmarks.run import NAIVE, Bench
from tests.helpers import free_port

WARM_UP, COUNTED, CONNECTIONS = 300, 3000, 50
BARE = Path(__file__).with_name("bare_server.py")


def main() -> int:
    install_missing("nginx", "valgrind")
    with tempfile.TemporaryDirectory(prefix="strangler-instructions-") as scratch, ExitStack() as running:
        bench = Bench(Path(scratch), running, 5)
        bench.start_nginx()
        upstream = str(bench.ports["upstream"])
        servers = {
            "a bare protocol on aiohttp's C parser, answering itself": lambda port: [str(BARE), port],
            "aiohttp's server alone, answering itself": lambda port: ["-m", "benchmarks.floors", "aiohttp", port],
            "strangler's edge alone, answering itself": lambda port: ["-m", "benchmarks.floors", "edge", port],
            "strangler's edge + upstream client (the floor)":
                lambda port: ["-m", "benchmarks.floors", "floor", port, upstream],
            "strangler, 1 process": lambda port: _strangler(bench, port),
            "strangler, 1 process, parallel run on all": lambda port: _strangler(bench, port, parallel=1.0),
            "naive aiohttp proxy (uvloop)": lambda port: [str(NAIVE), port, upstream],
        }
        print(f"instructions per request, callgrind, {COUNTED:,} keep-alive requests on {CONNECTIONS} connections\n")
        counted = {}
        for name, command in servers.items():
            counted[name] = count(command, Path(scratch) / "callgrind.out")
            print(f"  {name:<60} {counted[name] / 1000:>8.1f} k", flush=True)
        naive, one = counted["naive aiohttp proxy (uvloop)"], counted["strangler, 1 process"]
        shadowed = counted["strangler, 1 process, parallel run on all"]
        print(f"\n  naive proxy / strangler: {naive / one:.2f}")
        print(f"  parallel run on all / none: {shadowed / one:.2f} (answers alike: each comparison ends at a byte compare)")
    return 0


def _strangler(bench: Bench, port: str, parallel: float | None = None) -> list[str]:
    bench.ports["counted"], bench.admins["counted"] = int(port), free_port()
    path = bench.strangler_config("counted", parallel)
    return ["-m", "proxy", "serve", "--config", str(path), "--log-level", "WARNING"]


def count(command, out: Path) -> float:
    """Instructions per request of the server `command(port)` starts."""
    port = free_port()
    server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                               *command(str(port))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/items/1"
        wait_for(url, 120)
        asyncio.run(load(port, WARM_UP))
        subprocess.run(["callgrind_control", "--zero", str(server.pid)], capture_output=True, check=True)
        asyncio.run(load(port, COUNTED))
        subprocess.run(["callgrind_control", "--dump", str(server.pid)], capture_output=True, check=True)
        time.sleep(1)
        dumps = sorted(out.parent.glob(out.name + "*"), key=lambda path: path.stat().st_mtime)
        totals = re.search(r"^(?:summary|totals):\s*(\d+)", dumps[-1].read_text(errors="replace"), re.M)
        return int(totals[1]) / COUNTED
    finally:
        server.terminate()
        server.wait()
        for dump in out.parent.glob(out.name + "*"):
            dump.unlink()


async def load(port: int, requests: int) -> None:
    """`requests` GETs over CONNECTIONS keep-alive connections; anything but 200 stops the count."""
    async def connection(each: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = f"GET /api/items/1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: load\r\n\r\n".encode()
        for _ in range(each):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):
                raise SystemExit(f"not a 200: {head[:80]!r}")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            await reader.readexactly(int(length[1]))
        writer.close()
    await asyncio.gather(*(connection(requests // CONNECTIONS) for _ in range(CONNECTIONS)))


if __name__ == "__main__":
    sys.exit(main())
