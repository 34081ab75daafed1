#!/usr/bin/env python3
"""A userspace slow-link emulator: a TCP relay that adds one-way delay and a rate limit.

Used by bench/run.sh when the kernel has no netem qdisc. It listens on --listen, connects each
client to --upstream, and forwards both directions through an emulated link:

  * each direction of the link is shared by every connection (like one cable): a chunk read
    from a socket is given the link from max(now, the time the link is next free) for
    len(chunk) * 8 / rate seconds, and is written out `delay` after that serialisation ends;
  * each connection direction queues at most --queue bytes (then stops reading, so TCP
    flow control pushes back on the sender) — enough to keep a bandwidth-delay product in
    flight;
  * with --conn-rate-mbit, each connection direction is also held to that rate on its own
    (a per-connection limit, as some CDNs, proxies and lossy long paths impose), within the
    shared rate.

It counts payload bytes only (no TCP/IP headers), so a client that keeps the link busy
reaches 100 % of --rate-mbit; netem's rate also charges headers (about 3 % at 1500-byte MTU).
TCP between each endpoint and the relay runs on loopback, so TCP slow start over the 50 ms
path is not emulated: the delay shows in request/response round trips. With --handshake, a new
connection's first bytes wait one more round trip, what its TCP handshake costs on a real link.
With --count-file, the number of connections accepted so far is kept in that file.

usage: link_relay.py --listen 127.0.0.1:0 --port-file F --upstream HOST:PORT
                     [--delay-ms 25] [--rate-mbit 200] [--conn-rate-mbit 0] [--queue BYTES]
                     [--handshake] [--count-file F]
"""

import argparse
import asyncio
import collections
import os
import signal

CHUNK = 64 * 1024


class Link:
    """One direction of the emulated cable."""

    def __init__(self, rate_bps, delay):
        self.rate = rate_bps
        self.delay = delay
        self.free_at = 0.0
        self.bytes = 0

    def schedule(self, now, n, own=None):
        """When `n` bytes read at `now` arrive; `own` is the connection's own Link, if any."""
        start = max(now, self.free_at)
        self.free_at = start + n * 8 / self.rate
        self.bytes += n
        end = self.free_at
        if own:
            # The connection's own limit is a separate constraint: waiting for it must not
            # hold the shared link (that would serialise every connection behind the slowest).
            own_start = max(now, own.free_at)
            own.free_at = own_start + n * 8 / own.rate
            end = max(end, own.free_at)
        return end + self.delay


class Pipe:
    def __init__(self, reader, writer, link, queue_cap, own=None):
        self.reader = reader
        self.writer = writer
        self.link = link
        self.own = own
        self.cap = queue_cap
        self.queue = collections.deque()
        self.queued = 0
        self.have_data = asyncio.Event()
        self.have_space = asyncio.Event()

    async def read_side(self):
        loop = asyncio.get_running_loop()
        try:
            while True:
                while self.queued >= self.cap:
                    self.have_space.clear()
                    await self.have_space.wait()
                data = await self.reader.read(CHUNK)
                if not data:
                    break
                due = self.link.schedule(loop.time(), len(data), self.own)
                self.queue.append((due, data))
                self.queued += len(data)
                self.have_data.set()
        except (ConnectionError, OSError):
            pass
        self.queue.append((loop.time() + self.link.delay, None))
        self.have_data.set()

    async def write_side(self):
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not self.queue:
                    self.have_data.clear()
                    await self.have_data.wait()
                due, data = self.queue.popleft()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                    await self.writer.drain()
                    return
                self.writer.write(data)
                await self.writer.drain()
                self.queued -= len(data)
                self.have_space.set()
        except (ConnectionError, OSError):
            pass


ACCEPTED = [0]


def count_connection(args):
    ACCEPTED[0] += 1
    if args.count_file:
        with open(args.count_file + ".tmp", "w", encoding="utf-8") as f:
            f.write(f"{ACCEPTED[0]}\n")
        os.replace(args.count_file + ".tmp", args.count_file)


async def handle(client_r, client_w, args, up_link, down_link):
    count_connection(args)
    if args.handshake:
        # SYN, SYN-ACK: the client's first bytes leave one round trip after it connects.
        await asyncio.sleep(2 * args.delay_ms / 1000)
    host, port = args.upstream.rsplit(":", 1)
    try:
        up_r, up_w = await asyncio.open_connection(host, int(port))
    except OSError:
        client_w.close()
        return
    def own():
        return Link(args.conn_rate_mbit * 1e6, 0.0) if args.conn_rate_mbit > 0 else None

    pipes = [
        Pipe(client_r, up_w, up_link, args.queue, own()),
        Pipe(up_r, client_w, down_link, args.queue, own()),
    ]
    tasks = []
    for p in pipes:
        tasks.append(asyncio.create_task(p.read_side()))
        tasks.append(asyncio.create_task(p.write_side()))
    # Done when both directions delivered their end, or one side broke.
    writers = [tasks[1], tasks[3]]
    await asyncio.wait(writers, return_when=asyncio.ALL_COMPLETED)
    for t in tasks:
        t.cancel()
    for w in (client_w, up_w):
        try:
            w.close()
        except OSError:
            pass


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--delay-ms", type=float, default=25.0)
    ap.add_argument("--rate-mbit", type=float, default=200.0)
    ap.add_argument("--conn-rate-mbit", type=float, default=0.0,
                    help="each connection's own rate limit, each direction (0: none)")
    ap.add_argument("--queue", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--handshake", action="store_true",
                    help="hold a new connection's first bytes for one round trip")
    ap.add_argument("--count-file", default="",
                    help="keep the number of connections accepted in this file")
    args = ap.parse_args()
    if args.count_file:
        ACCEPTED[0] = -1
        count_connection(args)  # 0 so far
    delay = args.delay_ms / 1000
    up_link = Link(args.rate_mbit * 1e6, delay)
    down_link = Link(args.rate_mbit * 1e6, delay)
    host, port = args.listen.rsplit(":", 1)
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args, up_link, down_link), host, int(port)
    )
    bound = server.sockets[0].getsockname()[1]
    with open(args.port_file + ".tmp", "w", encoding="utf-8") as f:
        f.write(f"{bound}\n")
    os.replace(args.port_file + ".tmp", args.port_file)
    print(f"relay 127.0.0.1:{bound} -> {args.upstream}: {args.delay_ms} ms each way, "
          f"{args.rate_mbit} Mbit/s each direction, {args.conn_rate_mbit or 'no'} Mbit/s "
          "per connection", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(f"relay done: {up_link.bytes} bytes up, {down_link.bytes} bytes down", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
