"""Each server's own time for a write, read off the loopback: from the write's request bytes
going in to the first event bytes carrying its marker coming out.

A client's clock also counts its own connect and send, and its wake-up for the event; on the
wire, only the server's part is left. Capture the loopback while the benches run (Debian's
`tcpdump`, as root), then read the capture:

    tcpdump -i lo -s 400 -w /tmp/one.pcap tcp &
    python3 -m bench.send_floor --writes 60
    python3 -m bench.peers --only fanout --servers pocketbase,feed --subscribers 1 --writes 60 \\
        --repeat 1 --out /tmp/one
    kill %1
    python3 -m bench.wire_times /tmp/one.pcap

A server is a port that received connections; it is named by its events: PocketBase's carry
`collectionName`, the floor's (bench/send_floor.py) begin with its comment, voicestack's feed
events are `event: message`. Writes are matched by the peers bench's markers (`qz00001zq`).
"""

from __future__ import annotations

import argparse
import statistics
import struct
from dataclasses import dataclass, field
from pathlib import Path

from bench.send_floor import FLOOR_COMMENT, MARKER

_SYN, _ACK = 0x02, 0x10
_ETHERNET = 1  # the link type of Linux's loopback in a capture
MIN_WRITES = 5


@dataclass(frozen=True)
class Packet:
    """A TCP segment with data (or a SYN), as captured."""

    at: float
    source: int
    destination: int
    payload: bytes
    syn: bool


@dataclass
class ServerTimes:
    """What one server port did: its name, and per write, request in → event out."""

    port: int
    name: str = "?"
    request_to_event_s: list[float] = field(default_factory=list)
    syn_to_event_s: list[float] = field(default_factory=list)


def read_pcap(path: Path) -> list[Packet]:
    """The IPv4 TCP segments of a classic pcap file of Ethernet frames (a loopback capture)."""
    data = path.read_bytes()
    magic, link_type = struct.unpack("<I", data[:4])[0], struct.unpack("<I", data[20:24])[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D) or link_type != _ETHERNET:
        raise SystemExit(f"{path}: not a little-endian pcap of Ethernet frames (tcpdump -i lo)")
    fraction = 1e9 if magic == 0xA1B23C4D else 1e6
    packets, offset = [], 24
    while offset + 16 <= len(data):
        seconds, part, length, _ = struct.unpack("<IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + length]
        offset += 16 + length
        ip = frame[14:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        tcp = ip[(ip[0] & 15) * 4 :]
        if len(tcp) < 20:
            continue
        source, destination = struct.unpack(">HH", tcp[:4])
        flags, payload = tcp[13], tcp[(tcp[12] >> 4) * 4 :]
        syn = bool(flags & _SYN) and not flags & _ACK
        if payload or syn:
            packets.append(Packet(seconds + part / fraction, source, destination, payload, syn))
    return packets


def _name(payload: bytes) -> str | None:
    if payload.startswith(FLOOR_COMMENT):
        return "floor (bench/send_floor.py)"
    if b"collectionName" in payload:
        return "PocketBase"
    if b"event: message" in payload:
        return "voicestack feed"
    return None


def server_times(packets: list[Packet]) -> list[ServerTimes]:
    """Per server port, each marked write's time from its request bytes (and from its
    connection's SYN) to the first event bytes carrying the same marker."""
    servers = {p.destination for p in packets if p.syn}
    syn_at: dict[int, float] = {}
    waiting: dict[tuple[str, int], tuple[float, float | None]] = {}
    found: dict[int, ServerTimes] = {}
    for packet in packets:
        if packet.syn:
            syn_at[packet.source] = packet.at
            continue
        for match in MARKER.finditer(packet.payload):
            key = match.group().decode()
            if packet.destination in servers and packet.source not in servers:
                waiting[(key, packet.destination)] = (packet.at, syn_at.get(packet.source))
            elif packet.source in servers and (key, packet.source) in waiting:
                request_at, syn = waiting.pop((key, packet.source))
                times = found.setdefault(packet.source, ServerTimes(packet.source))
                times.name = _name(packet.payload) or times.name
                times.request_to_event_s.append(packet.at - request_at)
                if syn is not None:
                    times.syn_to_event_s.append(packet.at - syn)
    # A port with a stray match or two (a warm-up, an answer echoing a marker) is no server
    # the benches measured.
    measured = [t for t in found.values() if len(t.request_to_event_s) >= MIN_WRITES]
    return sorted(measured, key=lambda t: t.port)


def _ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000:.2f}"


def render(times: list[ServerTimes]) -> str:
    """A markdown table, one row per server port."""
    lines = [
        "| server (port) | writes | request → event p50 ms | p90 | min | SYN → event p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for t in times:
        values, syns = t.request_to_event_s, t.syn_to_event_s
        syn = f"{statistics.median(syns) * 1000:.2f}" if syns else ""
        lines.append(
            f"| {t.name} ({t.port}) | {len(values)} | {statistics.median(values) * 1000:.2f} |"
            f" {_ms(values, 0.9)} | {min(values) * 1000:.2f} | {syn} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Print each server's times from a capture."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture", type=Path, help="a pcap file: tcpdump -i lo -w FILE tcp")
    times = server_times(read_pcap(parser.parse_args().capture))
    print(render(times) if times else "no marked writes in the capture")


if __name__ == "__main__":
    main()
