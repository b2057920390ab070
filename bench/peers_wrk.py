"""HTTP request rates for `bench/peers.py`: `wrk` (Debian's package) with a Lua script per request.

wrk's own CPU is measured from the kernel's accounting of reaped children, so the report shows
whether the load generator, sharing the machine with the server, could have been the limit.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.peers_report import PB, WriteRow, voicestack_name
from bench.peers_servers import (
    COLLECTION,
    Fake,
    PocketBase,
    Voicestack,
    find_wrk,
    tree_cpu,
    tree_written,
)
from bench.sse_client import HOST

WRK_GRACE_S = 30.0


@dataclass
class WrkResult:
    """What one wrk run measured."""

    requests_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    client_cpu_s: float = 0.0
    error: str = ""


def lua_script(method: str, body: str, headers: dict[str, str]) -> str:
    """A wrk script that sends the same request on every connection."""
    lines = [f'wrk.method = "{method}"', f"wrk.body = [[{body}]]"]
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    return "\n".join(lines) + "\n"


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        return 0.0
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[match.group(2)]
    return float(match.group(1)) * scale


def parse_wrk(out: str) -> WrkResult:
    """The figures of wrk's `--latency` output."""
    result = WrkResult()
    if found := re.search(r"Requests/sec:\s*([\d.]+)", out):
        result.requests_per_s = float(found.group(1))
    if found := re.search(r"(\d+) requests in", out):
        result.requests = int(found.group(1))
    if found := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out):
        result.non_2xx = int(found.group(1))
    if found := re.search(r"Socket errors:(.*)", out):
        result.socket_errors = sum(int(n) for n in re.findall(r"\d+", found.group(1)))
    if found := re.search(r"^\s*50%\s+(\S+)", out, re.M):
        result.p50_ms = _duration_ms(found.group(1))
    if found := re.search(r"^\s*99%\s+(\S+)", out, re.M):
        result.p99_ms = _duration_ms(found.group(1))
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    wrk: Path,
    script_dir: Path,
    port: int,
    path: str,
    lua: str,
    connections: int,
    seconds: float,
    threads: int = 2,
) -> WrkResult:
    """Run wrk against 127.0.0.1:`port` `path` with the request of `lua`."""
    script = script_dir / f"wrk-{port}-{connections}.lua"
    script.write_text(lua)
    cmd = [str(wrk), f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds:g}s"]
    cmd += ["--latency", "--timeout", "10s", "-s", str(script), f"http://{HOST}:{port}{path}"]
    cpu0 = _children_cpu()
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + WRK_GRACE_S, check=False
        )
    except subprocess.TimeoutExpired:
        return WrkResult(error=f"wrk did not finish in {seconds + WRK_GRACE_S:g} s")
    result = parse_wrk(done.stdout)
    result.client_cpu_s = _children_cpu() - cpu0
    if done.returncode != 0 or not result.requests:
        result.error = (done.stderr or done.stdout).strip()[-300:]
    return result


# -- writes ------------------------------------------------------------------------------------


async def run_writes(args: argparse.Namespace, work: Path, fake: Fake) -> list[WriteRow]:
    """wrk against both servers, fresh, one request kind and connection count at a time."""
    wrk = find_wrk()
    if wrk is None:
        print("wrk is not installed (apt-get install wrk): no write rows", file=sys.stderr)
        return []
    rows: list[WriteRow] = []
    servers: list[PocketBase | Voicestack] = [
        Voicestack(work, fake.port, workers=n) for n in args.write_workers
    ]
    if args.pocketbase:
        servers.insert(0, PocketBase(args.pocketbase, work))
    try:
        for server in servers:
            await server.start()
        for conns in args.wrk_connections:
            for kind in ("create", "health"):
                for server in servers:
                    rows.append(_wrk_row(args, wrk, work, server, kind, conns))
                    print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        for server in servers:
            server.stop()
    return rows


def _wrk_row(
    args: argparse.Namespace,
    wrk: Path,
    work: Path,
    server: PocketBase | Voicestack,
    kind: str,
    conns: int,
) -> WriteRow:
    json_type = {"Content-Type": "application/json"}
    if isinstance(server, Voicestack):
        name, auth = voicestack_name(server.workers), {"Authorization": f"Bearer {server.token}"}
        path, lua = "/healthz", lua_script("GET", "", {})
        if kind == "create":
            path = "/api/mutation/threads.create"
            lua = lua_script("POST", '{"args":{}}', {**json_type, **auth})
    else:
        name, path, lua = PB, "/api/health", lua_script("GET", "", {})
        if kind == "create":
            path = f"/api/collections/{COLLECTION}/records"
            lua = lua_script("POST", '{"text":"hello from wrk"}', json_type)
    cpu0, written0 = tree_cpu(server.pid), tree_written(server.pid)
    got = run_wrk(wrk, work, server.port, path, lua, conns, args.wrk_seconds)
    written = tree_written(server.pid) - written0
    return WriteRow(
        name,
        kind,
        path,
        conns,
        got.requests_per_s,
        got.p50_ms,
        got.p99_ms,
        got.non_2xx,
        tree_cpu(server.pid) - cpu0,
        got.client_cpu_s,
        error=got.error,
        written_kib_per_request=written / 1024 / got.requests if got.requests else 0.0,
    )
