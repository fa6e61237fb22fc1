#!/usr/bin/env python3
"""WebSocket conformance of Veza's /v1/echo, seen from the Python `websockets`
client (a second, independent implementation next to the Rust tests' tungstenite).

Usage: ws_conformance.py ws://127.0.0.1:PORT/v1/echo
           [--frame-bytes-max F] [--message-bytes-max M]

F and M are the server's websocket_frame_bytes_max and
websocket_message_bytes_max (defaults: the server's defaults). The script
sends one frame over F and one fragmented message over M and expects close
code 1009 for each. Each check prints one PASS/FAIL line, then a count; the
exit code is 0 only if every check passed. Every network step has a timeout, so the script ends
on its own.
"""

import argparse
import sys
import time

try:
    import websockets
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect as websockets_connect
except ImportError as error:  # pragma: no cover - depends on the machine
    print(
        f"FAIL setup: the Python 'websockets' package is not importable ({error}); "
        "run the project setup script, `bash scripts/setup.sh`, which installs it",
        file=sys.stderr,
    )
    sys.exit(2)

# Seconds any one network step may take.
STEP_TIMEOUT_S = 5
# Lengths at each boundary of the frame length encoding (7-bit, 16-bit, 64-bit).
PAYLOAD_LENGTHS = [0, 1, 125, 126, 65_535, 65_536, 1_000_000]


def connect(url, subprotocols=None):
    """Opens a client connection with timeouts and without the library's own
    keepalive pings or compression, so only the checks' frames are on the wire."""
    return websockets_connect(
        url,
        subprotocols=subprotocols,
        open_timeout=STEP_TIMEOUT_S,
        close_timeout=STEP_TIMEOUT_S,
        ping_interval=None,
        compression=None,
        max_size=None,
        proxy=None,
    )


def text_of_length(length):
    return "".join(chr(ord("a") + index % 26) for index in range(length))


def bytes_of_length(length):
    return bytes(index * 31 % 251 for index in range(length))


def expect_equal(actual, expected, what):
    if actual != expected:
        shown = repr(actual)[:80]
        raise AssertionError(f"{what}: got {shown} ({type(actual).__name__}, {len(actual)} long)")


def check_text_echo(url, limits):
    with connect(url) as ws:
        for length in (n for n in PAYLOAD_LENGTHS if n <= limits.frame_bytes_max):
            text = text_of_length(length)
            ws.send(text)
            expect_equal(ws.recv(timeout=STEP_TIMEOUT_S), text, f"text of {length} bytes")


def check_binary_echo(url, limits):
    with connect(url) as ws:
        for length in (n for n in PAYLOAD_LENGTHS if n <= limits.frame_bytes_max):
            payload = bytes_of_length(length)
            ws.send(payload)
            expect_equal(ws.recv(timeout=STEP_TIMEOUT_S), payload, f"binary of {length} bytes")


def check_multi_byte_text(url, limits):
    text = "héllo wörld — ☃ 日本語 𝄞 🎵"
    with connect(url) as ws:
        ws.send(text)
        expect_equal(ws.recv(timeout=STEP_TIMEOUT_S), text, "multi-byte text")


def check_fragmented_send(url, limits):
    # An iterable is sent as one fragmented message, one frame per item.
    with connect(url) as ws:
        ws.send(["Hel", "lo, ", "wörld"])
        expect_equal(ws.recv(timeout=STEP_TIMEOUT_S), "Hello, wörld", "fragmented text")
        ws.send([b"\x00\x01", b"\x02", b"\xff"])
        expect_equal(ws.recv(timeout=STEP_TIMEOUT_S), b"\x00\x01\x02\xff", "fragmented binary")


def check_ping_pong(url, limits):
    with connect(url) as ws:
        for payload in [b"", b"veza-ping", bytes(range(125))]:
            # The waiter is set only by a pong carrying this exact payload.
            pong = ws.ping(payload)
            if not pong.wait(STEP_TIMEOUT_S):
                raise AssertionError(f"no pong for a ping of {len(payload)} bytes")


def check_subprotocol_chosen(url, limits):
    with connect(url, subprotocols=["foo", "veza.echo"]) as ws:
        expect_equal(ws.subprotocol, "veza.echo", "chosen subprotocol")
        ws.send("negotiated")
        expect_equal(ws.recv(timeout=STEP_TIMEOUT_S), "negotiated", "echo after negotiation")


def check_subprotocol_none_supported(url, limits):
    with connect(url, subprotocols=["foo"]) as ws:
        if ws.subprotocol is not None:
            raise AssertionError(f"the server chose {ws.subprotocol!r} though only 'foo' was offered")
        ws.send("still upgraded")
        expect_equal(ws.recv(timeout=STEP_TIMEOUT_S), "still upgraded", "echo without a subprotocol")


def check_close_1000(url, limits):
    ws = connect(url)
    ws.close(code=1000, reason="done")
    expect_code(ws.protocol.close_rcvd, 1000, "close code echoed by the server")


def check_frame_over_the_limit_closed_with_1009(url, limits):
    with connect(url) as ws:
        expect_closed_with(ws, 1009, lambda: ws.send(bytes(limits.frame_bytes_max + 1)))


def check_fragments_over_the_message_limit_closed_with_1009(url, limits):
    # Every fragment is at the frame limit; together they pass the message
    # limit.
    n_fragments = limits.message_bytes_max // limits.frame_bytes_max + 1
    fragments = [bytes(limits.frame_bytes_max)] * n_fragments
    with connect(url) as ws:
        expect_closed_with(ws, 1009, lambda: ws.send(fragments))


def expect_closed_with(ws, code, send):
    """Runs `send`, then expects the server's close frame with `code`. The
    server may close while the send is still going on."""
    try:
        send()
        message = ws.recv(timeout=STEP_TIMEOUT_S)
    except ConnectionClosed as closed:
        # No close frame read: say what ended the connection instead (for
        # example a reset while the oversize message was still being sent).
        cause = "" if closed.rcvd is not None else f" (connection ended by {closed.__cause__!r})"
        expect_code(closed.rcvd, code, f"close code from the server{cause}")
        return
    raise AssertionError(f"expected close {code}, received a message of {len(message)} bytes")


def expect_code(close_frame, code, what):
    received = None if close_frame is None else close_frame.code
    if received != code:
        raise AssertionError(f"{what}: expected {code}, got {received}")


CHECKS = [
    ("text echo at every length boundary", check_text_echo),
    ("binary echo at every length boundary", check_binary_echo),
    ("multi-byte UTF-8 text echo", check_multi_byte_text),
    ("fragmented text and binary reassembled", check_fragmented_send),
    ("ping answered with the same payload", check_ping_pong),
    ("subprotocol veza.echo chosen from 'foo, veza.echo'", check_subprotocol_chosen),
    ("subprotocol 'foo' alone: upgraded, none chosen", check_subprotocol_none_supported),
    ("client close 1000 echoed", check_close_1000),
    ("frame over the frame limit closed with 1009", check_frame_over_the_limit_closed_with_1009),
    ("fragments over the message limit closed with 1009", check_fragments_over_the_message_limit_closed_with_1009),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="ws://host:port/v1/echo")
    parser.add_argument(
        "--frame-bytes-max",
        type=int,
        default=1_048_576,
        help="the server's websocket_frame_bytes_max",
    )
    parser.add_argument(
        "--message-bytes-max",
        type=int,
        default=4_194_304,
        help="the server's websocket_message_bytes_max",
    )
    args = parser.parse_args()
    print(
        f"websockets {websockets.__version__} against {args.url}, "
        f"frame limit {args.frame_bytes_max}, message limit {args.message_bytes_max} bytes"
    )
    n_passed = n_failed = 0
    for name, check in CHECKS:
        started = time.monotonic()
        try:
            check(args.url, args)
        except Exception as error:  # Every failure is reported, then the next check runs.
            n_failed += 1
            print(f"FAIL {name}: {type(error).__name__}: {error}")
        else:
            n_passed += 1
            print(f"PASS {name} ({time.monotonic() - started:.2f} s)")
    # Worded so that CI does not mistake it for the test runner's own count.
    print(f"checks passed: {n_passed}, checks failed: {n_failed}")
    return 0 if n_failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
