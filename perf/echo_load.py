#!/usr/bin/env python3
"""A small, bounded WebSocket echo load for the perf scripts.

Each connection sends one message to /v1/echo, waits for its echo, and
repeats: strictly one message in flight per connection, so that a run with
one connection makes the server take the same code path the same number of
times on every run (what perf/callgrind.sh needs for stable counts).

Bounded two ways: --messages per connection (a fixed amount of work) or
--seconds (a fixed time, for perf/stat.sh and perf/flamegraph.sh). Every run
also stops at --timeout-seconds whatever happens.

Prints one JSON object: messages echoed, errors, seconds.
"""

import argparse
import asyncio
import json
import sys
import time

import websockets


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080/v1/echo")
    parser.add_argument("--connections", type=int, default=1)
    bound = parser.add_mutually_exclusive_group(required=True)
    bound.add_argument("--messages", type=int, help="messages per connection")
    bound.add_argument("--seconds", type=float, help="run for this long")
    parser.add_argument("--payload-bytes", type=int, default=64)
    parser.add_argument("--timeout-seconds", type=float, default=120.0)
    arguments = parser.parse_args()
    if arguments.connections < 1 or arguments.payload_bytes < 1:
        parser.error("--connections and --payload-bytes must be at least 1")
    return arguments


async def one_connection(arguments, deadline, totals):
    payload = b"v" * arguments.payload_bytes
    try:
        async with websockets.connect(arguments.url, max_size=None) as socket:
            sent = 0
            while True:
                if arguments.messages is not None and sent >= arguments.messages:
                    break
                if arguments.messages is None and time.monotonic() >= deadline:
                    break
                await socket.send(payload)
                reply = await socket.recv()
                sent += 1
                if reply != payload:
                    totals["errors"] += 1
                else:
                    totals["messages"] += 1
    except (OSError, websockets.exceptions.WebSocketException) as error:
        totals["errors"] += 1
        print(f"echo_load: connection failed: {error}", file=sys.stderr)


async def main():
    arguments = parse_arguments()
    totals = {"messages": 0, "errors": 0}
    started = time.monotonic()
    deadline = started + (arguments.seconds or 0.0)
    tasks = [one_connection(arguments, deadline, totals) for _ in range(arguments.connections)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), arguments.timeout_seconds)
    except asyncio.TimeoutError:
        totals["errors"] += 1
        print("echo_load: timed out", file=sys.stderr)
    totals["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(totals))
    return 0 if totals["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
