#!/usr/bin/env python3
"""A Veza chat client (protocol v1) written from `proto/PROTOCOL.md` alone,
plus a scenario runner that checks a live server against that document.

The point of this file is to show that the document is enough to build a
client: it uses only the standard library (`struct` for the frames) and the
`websockets` package for the WebSocket layer, and no knowledge of the Rust
implementation.

Library use:

    client = await ChatClient.connect("ws://127.0.0.1:8080/v1/chat")
    auth_ok = await client.auth(token)
    replayed, subscribed = await client.subscribe(room_id, since_seq=-1)
    sent = await client.send_message(room_id, "hello", nonce=new_nonce())
    event = await client.next_event()
    page = await client.history(room_id, after_seq=0, limit=100)

Scenario use (what `dataplane/tests/chat_python_client.rs` runs):

    chat_client.py --url ws://127.0.0.1:PORT/v1/chat \
        --token-a TOKEN --token-b TOKEN --room ROOM_ID
        [--user-id-a ID] [--user-id-b ID]

Both users must be members of the room, which must be new (no messages).
The runner prints one JSON line ({"ok": ..., "checks": [...], ...}) and
exits 0 only if every check passed; 1 when a check failed, 2 on a usage or
setup problem. Every network step has a timeout and the whole scenario has
one too, so it always ends on its own.
"""

import argparse
import asyncio
import json
import os
import struct
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

try:
    import websockets
    from websockets.asyncio.client import connect as websockets_connect
    from websockets.exceptions import ConnectionClosed
except ImportError as error:  # pragma: no cover - depends on the machine
    print(
        json.dumps(
            {
                "ok": False,
                "error": f"the Python 'websockets' package is not importable ({error}); "
                "run the project setup script, `bash scripts/setup.sh`, which installs it",
            }
        )
    )
    sys.exit(2)

# ---------------------------------------------------------------------------
# Constants from the document
# ---------------------------------------------------------------------------

SUBPROTOCOL = "veza.v1"
CHAT_PATH = "/v1/chat"

TOKEN_BYTES_MAX = 4096
NONCE_BYTES_MAX = 64
EMOJI_BYTES_MAX = 64
MENTIONS_MAX = 50
HISTORY_LIMIT_MAX = 1000
STREAM_NAME_BYTES_MAX = 64
WATCHED_STREAMS_MAX = 16

# Client commands.
OP_AUTH = 0x01
OP_SUBSCRIBE = 0x02
OP_UNSUBSCRIBE = 0x03
OP_SEND = 0x04
OP_EDIT = 0x05
OP_DELETE = 0x06
OP_REACT = 0x07
OP_TYPING = 0x08
OP_SET_PRESENCE = 0x09
OP_READ_MARKER = 0x0A
OP_HISTORY = 0x0B
OP_WATCH_STREAM = 0x0C
OP_UNWATCH_STREAM = 0x0D

# Server replies.
OP_OK = 0x80
OP_AUTH_OK = 0x81
OP_SUBSCRIBED = 0x82
OP_SENT = 0x83
OP_HISTORY_PAGE = 0x84
OP_ERROR = 0x8F

# Server events.
OP_MESSAGE = 0x90
OP_EDITED = 0x91
OP_DELETED = 0x92
OP_REACTION = 0x93
OP_TYPING_EVENT = 0x94
OP_PRESENCE = 0x95
OP_MENTION = 0x96
OP_REMOVED = 0x97
OP_NOW_PLAYING = 0x98

ERROR_CODES = {
    1: "malformed",
    2: "unknown_opcode",
    3: "not_authenticated",
    4: "already_authenticated",
    5: "forbidden",
    6: "not_found",
    7: "rate_limited",
    8: "slow_mode",
    9: "muted",
    10: "too_large",
    11: "unavailable",
    12: "invalid",
    13: "too_many_subscriptions",
    14: "internal",
}
ERROR_NUMBERS = {name: number for number, name in ERROR_CODES.items()}

PRESENCE_STATUSES = {1: "online", 2: "idle", 3: "do_not_disturb", 4: "offline"}
REMOVED_REASONS = {1: "kicked", 2: "banned", 3: "room_deleted"}

CLOSE_UNSUPPORTED_DATA = 1003


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


class Encoder:
    """Builds one frame field by field (all integers big-endian)."""

    def __init__(self, opcode: int):
        self.parts = [struct.pack(">B", opcode)]

    def u8(self, value: int) -> "Encoder":
        self.parts.append(struct.pack(">B", value))
        return self

    def u16(self, value: int) -> "Encoder":
        self.parts.append(struct.pack(">H", value))
        return self

    def u32(self, value: int) -> "Encoder":
        self.parts.append(struct.pack(">I", value))
        return self

    def u64(self, value: int) -> "Encoder":
        self.parts.append(struct.pack(">Q", value))
        return self

    def i64(self, value: int) -> "Encoder":
        self.parts.append(struct.pack(">q", value))
        return self

    def bool(self, value: bool) -> "Encoder":
        return self.u8(1 if value else 0)

    def string(self, value: str) -> "Encoder":
        data = value.encode("utf-8")
        if len(data) > 0xFFFF:
            raise ValueError("a string field holds at most 65535 bytes")
        self.u16(len(data))
        self.parts.append(data)
        return self

    def text(self, value: str) -> "Encoder":
        data = value.encode("utf-8")
        self.u32(len(data))
        self.parts.append(data)
        return self

    def i64_list(self, values) -> "Encoder":
        values = list(values)
        if len(values) > 0xFFFF:
            raise ValueError("a list holds at most 65535 items")
        self.u16(len(values))
        for value in values:
            self.i64(value)
        return self

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def encode_auth(request_id: int, token: str) -> bytes:
    return Encoder(OP_AUTH).u32(request_id).string(token).bytes()


def encode_subscribe(request_id: int, room_id: int, since_seq: int) -> bytes:
    return Encoder(OP_SUBSCRIBE).u32(request_id).i64(room_id).i64(since_seq).bytes()


def encode_unsubscribe(request_id: int, room_id: int) -> bytes:
    return Encoder(OP_UNSUBSCRIBE).u32(request_id).i64(room_id).bytes()


def encode_send(
    request_id: int,
    room_id: int,
    body: str,
    nonce: str = "",
    mentions=(),
    thread_parent_seq: int = 0,
) -> bytes:
    return (
        Encoder(OP_SEND)
        .u32(request_id)
        .i64(room_id)
        .i64(thread_parent_seq)
        .string(nonce)
        .i64_list(mentions)
        .text(body)
        .bytes()
    )


def encode_edit(request_id: int, room_id: int, seq: int, body: str) -> bytes:
    return Encoder(OP_EDIT).u32(request_id).i64(room_id).i64(seq).text(body).bytes()


def encode_delete(request_id: int, room_id: int, seq: int) -> bytes:
    return Encoder(OP_DELETE).u32(request_id).i64(room_id).i64(seq).bytes()


def encode_react(request_id: int, room_id: int, seq: int, add: bool, emoji: str) -> bytes:
    return (
        Encoder(OP_REACT).u32(request_id).i64(room_id).i64(seq).bool(add).string(emoji).bytes()
    )


def encode_typing(request_id: int, room_id: int) -> bytes:
    return Encoder(OP_TYPING).u32(request_id).i64(room_id).bytes()


def encode_set_presence(request_id: int, status: int) -> bytes:
    return Encoder(OP_SET_PRESENCE).u32(request_id).u8(status).bytes()


def encode_read_marker(request_id: int, room_id: int, seq: int) -> bytes:
    return Encoder(OP_READ_MARKER).u32(request_id).i64(room_id).i64(seq).bytes()


def encode_history(
    request_id: int, room_id: int, before_seq: int = 0, after_seq: int = -1, limit: int = 50
) -> bytes:
    return (
        Encoder(OP_HISTORY)
        .u32(request_id)
        .i64(room_id)
        .i64(before_seq)
        .i64(after_seq)
        .u16(limit)
        .bytes()
    )


def encode_watch_stream(request_id: int, stream: str) -> bytes:
    return Encoder(OP_WATCH_STREAM).u32(request_id).string(stream).bytes()


def encode_unwatch_stream(request_id: int, stream: str) -> bytes:
    return Encoder(OP_UNWATCH_STREAM).u32(request_id).string(stream).bytes()


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


class MalformedFrame(Exception):
    """A server frame that breaks the document's rules."""


class UnknownOpcode(MalformedFrame):
    """A server frame whose opcode this client does not know."""


class Reader:
    """Reads fields off one frame, checking lengths, UTF-8 and bools."""

    def __init__(self, data: bytes):
        self.data = data
        self.offset = 0

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.data):
            raise MalformedFrame(
                f"field of {count} bytes at offset {self.offset} runs past the end "
                f"({len(self.data)} bytes)"
            )
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def u8(self) -> int:
        return struct.unpack(">B", self.take(1))[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def i64(self) -> int:
        return struct.unpack(">q", self.take(8))[0]

    def bool(self) -> bool:
        value = self.u8()
        if value not in (0, 1):
            raise MalformedFrame(f"bool byte {value} is neither 0 nor 1")
        return value == 1

    def _utf8(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise MalformedFrame(f"invalid UTF-8: {error}") from None

    def string(self) -> str:
        return self._utf8(self.take(self.u16()))

    def text(self) -> str:
        return self._utf8(self.take(self.u32()))

    def i64_list(self) -> List[int]:
        return [self.i64() for _ in range(self.u16())]

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise MalformedFrame(
                f"{len(self.data) - self.offset} trailing bytes after the last field"
            )


@dataclass
class Ok:
    request_id: int
    kind: str = "Ok"


@dataclass
class AuthOk:
    request_id: int
    user_id: int
    connection_id: int
    username: str
    message_bytes_max: int
    kind: str = "AuthOk"


@dataclass
class Subscribed:
    request_id: int
    room_id: int
    head_seq: int
    replayed: int
    kind: str = "Subscribed"


@dataclass
class Sent:
    request_id: int
    room_id: int
    seq: int
    kind: str = "Sent"


@dataclass
class ReactionCount:
    emoji: str
    count: int


@dataclass
class HistoryMessage:
    seq: int
    author_id: int
    thread_parent_seq: int
    created_at_ms: int
    edited_at_ms: int
    deleted_at_ms: int
    mentions: List[int]
    body: str
    reactions: List[ReactionCount]


@dataclass
class HistoryPage:
    request_id: int
    room_id: int
    messages: List[HistoryMessage]
    kind: str = "HistoryPage"


@dataclass
class Error:
    request_id: int
    code: int
    retry_after_ms: int
    message: str
    kind: str = "Error"

    @property
    def code_name(self) -> str:
        return ERROR_CODES.get(self.code, f"code {self.code}")


@dataclass
class Message:
    room_id: int
    seq: int
    author_id: int
    thread_parent_seq: int
    created_at_ms: int
    nonce: str
    mentions: List[int]
    body: str
    kind: str = "Message"


@dataclass
class Edited:
    room_id: int
    seq: int
    editor_id: int
    edited_at_ms: int
    body: str
    kind: str = "Edited"


@dataclass
class Deleted:
    room_id: int
    seq: int
    deleter_id: int
    deleted_at_ms: int
    kind: str = "Deleted"


@dataclass
class Reaction:
    room_id: int
    seq: int
    user_id: int
    add: bool
    emoji: str
    kind: str = "Reaction"


@dataclass
class Typing:
    room_id: int
    user_id: int
    kind: str = "Typing"


@dataclass
class Presence:
    room_id: int
    user_id: int
    status: int
    kind: str = "Presence"


@dataclass
class Mention:
    room_id: int
    seq: int
    author_id: int
    created_at_ms: int
    body: str
    kind: str = "Mention"


@dataclass
class Removed:
    room_id: int
    reason: int
    kind: str = "Removed"


@dataclass
class NowPlaying:
    stream: str
    title: str
    updated_at_ms: int
    kind: str = "NowPlaying"


REPLY_TYPES = (Ok, AuthOk, Subscribed, Sent, HistoryPage, Error)
EPHEMERAL_TYPES = (Typing, Presence)


def decode_server_frame(data: bytes):
    """Decodes one server frame (one binary WebSocket message)."""
    if not data:
        raise MalformedFrame("empty frame")
    reader = Reader(data)
    opcode = reader.u8()
    if opcode == OP_OK:
        frame = Ok(reader.u32())
    elif opcode == OP_AUTH_OK:
        frame = AuthOk(reader.u32(), reader.i64(), reader.u64(), reader.string(), reader.u32())
    elif opcode == OP_SUBSCRIBED:
        frame = Subscribed(reader.u32(), reader.i64(), reader.i64(), reader.u32())
    elif opcode == OP_SENT:
        frame = Sent(reader.u32(), reader.i64(), reader.i64())
    elif opcode == OP_HISTORY_PAGE:
        request_id, room_id = reader.u32(), reader.i64()
        messages = []
        for _ in range(reader.u16()):
            seq, author_id, thread_parent_seq = reader.i64(), reader.i64(), reader.i64()
            created, edited, deleted = reader.i64(), reader.i64(), reader.i64()
            mentions, body = reader.i64_list(), reader.text()
            reactions = [ReactionCount(reader.string(), reader.u32()) for _ in range(reader.u16())]
            messages.append(
                HistoryMessage(
                    seq, author_id, thread_parent_seq, created, edited, deleted,
                    mentions, body, reactions,
                )
            )
        frame = HistoryPage(request_id, room_id, messages)
    elif opcode == OP_ERROR:
        frame = Error(reader.u32(), reader.u16(), reader.u32(), reader.string())
        if frame.code not in ERROR_CODES:
            raise MalformedFrame(f"Error frame with unknown code {frame.code}")
    elif opcode == OP_MESSAGE:
        frame = Message(
            reader.i64(), reader.i64(), reader.i64(), reader.i64(), reader.i64(),
            reader.string(), reader.i64_list(), reader.text(),
        )
    elif opcode == OP_EDITED:
        frame = Edited(reader.i64(), reader.i64(), reader.i64(), reader.i64(), reader.text())
    elif opcode == OP_DELETED:
        frame = Deleted(reader.i64(), reader.i64(), reader.i64(), reader.i64())
    elif opcode == OP_REACTION:
        frame = Reaction(reader.i64(), reader.i64(), reader.i64(), reader.bool(), reader.string())
    elif opcode == OP_TYPING_EVENT:
        frame = Typing(reader.i64(), reader.i64())
    elif opcode == OP_PRESENCE:
        frame = Presence(reader.i64(), reader.i64(), reader.u8())
        if frame.status not in PRESENCE_STATUSES:
            raise MalformedFrame(f"Presence with unknown status {frame.status}")
    elif opcode == OP_MENTION:
        frame = Mention(reader.i64(), reader.i64(), reader.i64(), reader.i64(), reader.text())
    elif opcode == OP_REMOVED:
        frame = Removed(reader.i64(), reader.u8())
        if frame.reason not in REMOVED_REASONS:
            raise MalformedFrame(f"Removed with unknown reason {frame.reason}")
    elif opcode == OP_NOW_PLAYING:
        frame = NowPlaying(reader.string(), reader.string(), reader.i64())
    else:
        raise UnknownOpcode(f"unknown server opcode 0x{opcode:02x}")
    reader.finish()
    return frame


# ---------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------


class ChatError(Exception):
    """The server answered a command with `Error`."""

    def __init__(self, error: Error):
        super().__init__(f"{error.code_name} ({error.code}): {error.message}")
        self.error = error


class ConnectionClosedByServer(Exception):
    """The WebSocket closed; `code` is the close code (None if none was received)."""

    def __init__(self, code: Optional[int], reason: str):
        super().__init__(f"connection closed with code {code} ({reason!r})")
        self.code = code
        self.reason = reason


class ProtocolViolation(Exception):
    """The server did something the document says it does not do."""


def new_nonce() -> str:
    """A fresh random nonce: 16 random bytes in hex, as the document suggests."""
    return os.urandom(16).hex()


class ChatClient:
    """One connection to the chat endpoint.

    Events that arrive while the client waits for a reply are kept, in
    order, and handed out by `next_event`. Replies are matched to commands
    by request id.
    """

    def __init__(self, websocket, step_timeout: float):
        self.websocket = websocket
        self.step_timeout = step_timeout
        self.events = []  # events received but not yet handed out, in order
        self.replies = {}  # request_id -> reply received but not yet claimed
        self.next_id = 1
        self.auth_ok: Optional[AuthOk] = None

    @classmethod
    async def connect(cls, url: str, step_timeout: float = 5.0) -> "ChatClient":
        websocket = await websockets_connect(
            url,
            subprotocols=[SUBPROTOCOL],
            open_timeout=step_timeout,
            close_timeout=step_timeout,
            proxy=None,
        )
        if websocket.subprotocol != SUBPROTOCOL:
            await websocket.close()
            raise ProtocolViolation(
                f"the server answered subprotocol {websocket.subprotocol!r}, not {SUBPROTOCOL!r}"
            )
        return cls(websocket, step_timeout)

    def request_id(self) -> int:
        request_id = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF or 1
        return request_id

    async def send_raw(self, data) -> None:
        """Sends one WebSocket message as is (bytes: binary, str: text)."""
        await self.websocket.send(data)

    async def recv_frame(self, timeout: Optional[float] = None):
        """Reads and decodes the next frame off the socket."""
        timeout = self.step_timeout if timeout is None else timeout
        try:
            data = await asyncio.wait_for(self.websocket.recv(), timeout)
        except ConnectionClosed as closed:
            raise self._closed(closed) from None
        if isinstance(data, str):
            raise ProtocolViolation("the server sent a text message")
        return decode_server_frame(data)

    def _closed(self, closed: ConnectionClosed) -> ConnectionClosedByServer:
        received = closed.rcvd
        if received is None:
            return ConnectionClosedByServer(None, "no close frame received")
        return ConnectionClosedByServer(received.code, received.reason)

    async def _pump_once(self, timeout: float) -> None:
        frame = await self.recv_frame(timeout)
        if isinstance(frame, REPLY_TYPES):
            if frame.request_id in self.replies:
                raise ProtocolViolation(f"two replies for request id {frame.request_id}: {frame}")
            self.replies[frame.request_id] = frame
        else:
            self.events.append(frame)

    async def reply(self, request_id: int, timeout: Optional[float] = None):
        """Waits for the reply to `request_id` (raises ChatError on `Error`)."""
        frame = await self.reply_or_error(request_id, timeout)
        if isinstance(frame, Error):
            raise ChatError(frame)
        return frame

    async def reply_or_error(self, request_id: int, timeout: Optional[float] = None):
        """Waits for the reply to `request_id`, `Error` included."""
        deadline = time.monotonic() + (self.step_timeout if timeout is None else timeout)
        while request_id not in self.replies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"no reply to request {request_id}")
            await self._pump_once(remaining)
        return self.replies.pop(request_id)

    async def command(self, encode, *args, **kwargs):
        """Sends a command built by `encode(request_id, ...)` and awaits its reply."""
        request_id = self.request_id()
        await self.send_raw(encode(request_id, *args, **kwargs))
        return await self.reply(request_id)

    async def next_event(self, timeout: Optional[float] = None, skip_ephemeral: bool = True):
        """The next event (Typing and Presence skipped unless asked for)."""
        deadline = time.monotonic() + (self.step_timeout if timeout is None else timeout)
        while True:
            while self.events:
                event = self.events.pop(0)
                if skip_ephemeral and isinstance(event, EPHEMERAL_TYPES):
                    continue
                return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise asyncio.TimeoutError("no event")
            await self._pump_once(remaining)

    def take_events(self, skip_ephemeral: bool = True):
        """Every event received so far, handed out."""
        events, self.events = self.events, []
        if skip_ephemeral:
            events = [event for event in events if not isinstance(event, EPHEMERAL_TYPES)]
        return events

    # Commands ---------------------------------------------------------------

    async def auth(self, token: str) -> AuthOk:
        if len(token.encode("utf-8")) > TOKEN_BYTES_MAX:
            raise ValueError("token over TOKEN_BYTES_MAX")
        self.auth_ok = await self.command(encode_auth, token)
        if not isinstance(self.auth_ok, AuthOk):
            raise ProtocolViolation(f"Auth answered with {self.auth_ok}")
        return self.auth_ok

    async def subscribe(self, room_id: int, since_seq: int = -1):
        """Subscribes; returns (the events replayed before Subscribed, Subscribed)."""
        request_id = self.request_id()
        already = len(self.events)
        await self.send_raw(encode_subscribe(request_id, room_id, since_seq))
        subscribed = await self.reply(request_id)
        if not isinstance(subscribed, Subscribed):
            raise ProtocolViolation(f"Subscribe answered with {subscribed}")
        # Events of this room cannot come before Subscribed except as replay,
        # so everything of the room queued since the command is the replay.
        replayed = [
            event
            for event in self.events[already:]
            if not isinstance(event, EPHEMERAL_TYPES)
            and getattr(event, "room_id", None) == room_id
            and not isinstance(event, Mention)
        ]
        self.events = [event for event in self.events if not any(event is r for r in replayed)]
        return replayed, subscribed

    async def unsubscribe(self, room_id: int) -> Ok:
        return await self.command(encode_unsubscribe, room_id)

    async def send_message(
        self, room_id: int, body: str, nonce: str = "", mentions=(), thread_parent_seq: int = 0
    ) -> Sent:
        self._check_body(body)
        if len(nonce.encode("utf-8")) > NONCE_BYTES_MAX:
            raise ValueError("nonce over NONCE_BYTES_MAX")
        if len(mentions) > MENTIONS_MAX:
            raise ValueError("more than MENTIONS_MAX mentions")
        return await self.command(
            encode_send, room_id, body, nonce=nonce, mentions=mentions,
            thread_parent_seq=thread_parent_seq,
        )

    async def edit(self, room_id: int, seq: int, body: str) -> Ok:
        self._check_body(body)
        return await self.command(encode_edit, room_id, seq, body)

    async def delete(self, room_id: int, seq: int) -> Ok:
        return await self.command(encode_delete, room_id, seq)

    async def react(self, room_id: int, seq: int, add: bool, emoji: str) -> Ok:
        return await self.command(encode_react, room_id, seq, add, emoji)

    async def typing(self, room_id: int) -> Ok:
        return await self.command(encode_typing, room_id)

    async def set_presence(self, status: int) -> Ok:
        return await self.command(encode_set_presence, status)

    async def read_marker(self, room_id: int, seq: int) -> Ok:
        return await self.command(encode_read_marker, room_id, seq)

    async def history(
        self, room_id: int, before_seq: int = 0, after_seq: int = -1, limit: int = 50
    ) -> HistoryPage:
        return await self.command(encode_history, room_id, before_seq, after_seq, limit)

    async def watch_stream(self, stream: str) -> Ok:
        return await self.command(encode_watch_stream, stream)

    async def unwatch_stream(self, stream: str) -> Ok:
        return await self.command(encode_unwatch_stream, stream)

    def _check_body(self, body: str) -> None:
        size = len(body.encode("utf-8"))
        if size == 0:
            raise ValueError("empty body")
        if self.auth_ok is not None and size > self.auth_ok.message_bytes_max:
            raise ValueError("body over message_bytes_max")

    async def wait_closed(self, timeout: Optional[float] = None) -> Optional[int]:
        """Reads until the server closes; returns the close code it sent."""
        deadline = time.monotonic() + (self.step_timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise asyncio.TimeoutError("the server did not close the connection")
            try:
                await self._pump_once(remaining)
            except ConnectionClosedByServer as closed:
                return closed.code

    async def close(self) -> None:
        await self.websocket.close()


# ---------------------------------------------------------------------------
# The worked examples of the document, encoded and decoded here
# ---------------------------------------------------------------------------

WORKED_EXAMPLES = {
    "client Auth": "01 00000001 000b 6162632e6465662e676869",
    "server AuthOk": "81 00000001 000000000000000c 0000000000000103 0003 626f62 00010000",
    "client Subscribe": "02 00000002 000000000000002a 0000000000000410",
    "server Subscribed": "82 00000002 000000000000002a 0000000000000411 00000001",
    "client Send": "04 00000003 000000000000002a 0000000000000000 0002 6e31 0001 "
    "0000000000000007 00000007 6869204061 6e61",
    "server Message": "90 000000000000002a 0000000000000412 000000000000000c "
    "0000000000000000 0000019b76daa800 0002 6e31 0001 0000000000000007 00000007 68692040616e61",
    "server Sent": "83 00000003 000000000000002a 0000000000000412",
    "client History": "0b 00000004 000000000000002a 0000000000000412 ffffffffffffffff 0001",
    "server HistoryPage": "84 00000004 000000000000002a 0001 0000000000000411 0000000000000007 "
    "0000000000000000 0000019b76d9bda0 0000000000000000 0000000000000000 0000 00000005 "
    "68656c6c6f 0001 0004 f09f918d 00000002",
    "client React": "07 00000006 000000000000002a 0000000000000411 01 0004 f09f918d",
    "server Ok": "80 00000006",
    "client SetPresence": "09 00000005 03",
    "server Presence": "95 000000000000002a 0000000000000007 02",
    "server Error": "8f 00000008 0007 000005dc 0009 736c6f7720646f776e",
    "client WatchStream": "0c 00000009 0005 726164696f",
    "server NowPlaying": "98 0005 726164696f 000d 417274697374202d20536f6e67 0000019b76db9260",
    "client UnwatchStream": "0d 0000000a 0005 726164696f",
}


def check_worked_examples() -> None:
    """Encodes the client examples and decodes the server ones (from the
    document's hex) and compares them with the values the document states."""
    hexes = {name: bytes.fromhex(text.replace(" ", "")) for name, text in WORKED_EXAMPLES.items()}
    lengths = {
        "client Auth": 18, "server AuthOk": 30, "client Subscribe": 21,
        "server Subscribed": 25, "client Send": 46, "server Message": 66, "server Sent": 21,
        "client History": 31, "server HistoryPage": 86, "client React": 28, "server Ok": 5,
        "client SetPresence": 6, "server Presence": 18, "server Error": 22,
        "client WatchStream": 12, "server NowPlaying": 31, "client UnwatchStream": 12,
    }
    for name, length in lengths.items():
        expect(len(hexes[name]) == length, f"{name}: {len(hexes[name])} bytes, document says {length}")
    encoded = {
        "client Auth": encode_auth(1, "abc.def.ghi"),
        "client Subscribe": encode_subscribe(2, 42, 1040),
        "client Send": encode_send(3, 42, "hi @ana", nonce="n1", mentions=[7]),
        "client History": encode_history(4, 42, before_seq=1042, after_seq=-1, limit=1),
        "client React": encode_react(6, 42, 1041, True, "\N{THUMBS UP SIGN}"),
        "client SetPresence": encode_set_presence(5, 3),
        "client WatchStream": encode_watch_stream(9, "radio"),
        "client UnwatchStream": encode_unwatch_stream(10, "radio"),
    }
    for name, data in encoded.items():
        expect(data == hexes[name], f"{name}: encoded {data.hex()} != {hexes[name].hex()}")
    decoded = {
        "server AuthOk": AuthOk(1, 12, 259, "bob", 65536),
        "server Subscribed": Subscribed(2, 42, 1041, 1),
        "server Message": Message(42, 1042, 12, 0, 1767225600000, "n1", [7], "hi @ana"),
        "server Sent": Sent(3, 42, 1042),
        "server HistoryPage": HistoryPage(
            4, 42,
            [HistoryMessage(1041, 7, 0, 1767225540000, 0, 0, [], "hello",
                            [ReactionCount("\N{THUMBS UP SIGN}", 2)])],
        ),
        "server Ok": Ok(6),
        "server Presence": Presence(42, 7, 2),
        "server Error": Error(8, 7, 1500, "slow down"),
        "server NowPlaying": NowPlaying("radio", "Artist - Song", 1767225660000),
    }
    for name, value in decoded.items():
        got = decode_server_frame(hexes[name])
        expect(got == value, f"{name}: decoded {got} != {value}")
    # Strictness: a trailing byte, a bad bool and a short frame are malformed.
    for bad in (hexes["server Ok"] + b"\x00", hexes["server Sent"][:-1],
                bytes.fromhex("93 000000000000002a 0000000000000001 0000000000000007 02 0000")):
        try:
            decode_server_frame(bad)
        except MalformedFrame:
            continue
        raise CheckFailed(f"decoder accepted malformed {bad.hex()}")


# ---------------------------------------------------------------------------
# The scenario
# ---------------------------------------------------------------------------


class CheckFailed(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


class Scenario:
    def __init__(self, args):
        self.args = args
        self.url = args.url
        self.room = args.room
        self.step = args.step_timeout
        self.checks = []  # names of the checks that passed
        self.info = {}

    def passed(self, name: str) -> None:
        self.checks.append(name)

    async def connect_and_auth(self, token: str, who: str) -> ChatClient:
        client = await ChatClient.connect(self.url, self.step)
        auth_ok = await client.auth(token)
        expect(auth_ok.user_id > 0, f"{who}: AuthOk user_id {auth_ok.user_id} is not positive")
        expect(auth_ok.username != "", f"{who}: AuthOk username is empty")
        expect(auth_ok.message_bytes_max > 0, f"{who}: AuthOk message_bytes_max is 0")
        return client

    async def collect_events(self, client: ChatClient, count_of, what: str):
        """Reads events until `count_of(events)` is true; returns them."""
        events = []
        deadline = time.monotonic() + self.step
        while not count_of(events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckFailed(f"timed out waiting for {what}; got {events}")
            try:
                events.append(await client.next_event(remaining))
            except asyncio.TimeoutError:
                raise CheckFailed(f"timed out waiting for {what}; got {events}") from None
        return events

    async def run(self) -> None:
        check_worked_examples()
        self.passed("worked_examples_encode_and_decode")
        room = self.room

        # 1. Connect, Auth.
        a = await self.connect_and_auth(self.args.token_a, "A")
        b = await self.connect_and_auth(self.args.token_b, "B")
        user_a, user_b = a.auth_ok.user_id, b.auth_ok.user_id
        expect(user_a != user_b, f"A and B got the same user id {user_a}")
        if self.args.user_id_a is not None:
            expect(user_a == self.args.user_id_a, f"A: user_id {user_a} != {self.args.user_id_a}")
        if self.args.user_id_b is not None:
            expect(user_b == self.args.user_id_b, f"B: user_id {user_b} != {self.args.user_id_b}")
        expect(a.auth_ok.connection_id != b.auth_ok.connection_id, "two connections share an id")
        self.info.update(user_a=user_a, user_b=user_b)
        self.passed("auth")

        # 2. Subscribe live.
        for who, client in (("A", a), ("B", b)):
            replayed, subscribed = await client.subscribe(room, -1)
            expect(subscribed.room_id == room, f"{who}: Subscribed room {subscribed.room_id}")
            expect(subscribed.replayed == 0 and not replayed,
                   f"{who}: since_seq -1 replayed {subscribed.replayed} / {replayed}")
            expect(subscribed.head_seq == 0, f"{who}: new room has head_seq {subscribed.head_seq}")
        self.passed("subscribe_live")

        # 3. A sends 5 (one mentions B); acks increase; B sees them in order.
        bodies = [f"hello {number} from python" for number in range(1, 6)]
        nonces = [new_nonce() for _ in bodies]
        mention_index = 2
        seqs = []
        for index, (body, nonce) in enumerate(zip(bodies, nonces)):
            mentions = [user_b] if index == mention_index else []
            sent = await a.send_message(room, body, nonce=nonce, mentions=mentions)
            expect(isinstance(sent, Sent), f"Send answered with {sent}")
            expect(sent.room_id == room, f"Sent room {sent.room_id}")
            expect(not seqs or sent.seq > seqs[-1], f"Sent seqs not increasing: {seqs} then {sent.seq}")
            seqs.append(sent.seq)
        expect(seqs[0] >= 1, f"first seq {seqs[0]} (seqs start at 1)")
        self.passed("send_acks_increasing")

        # A, subscribed, receives its own messages with its nonces.
        own = await self.collect_events(
            a, lambda events: sum(isinstance(e, Message) for e in events) >= 5, "A's own Messages")
        own_messages = [e for e in own if isinstance(e, Message)]
        expect([m.seq for m in own_messages] == seqs, f"A's own Message seqs {own_messages}")
        expect([m.nonce for m in own_messages] == nonces, "A's own Message events carry other nonces")
        self.passed("sender_sees_own_messages_with_nonce")

        events_b = await self.collect_events(
            b,
            lambda events: sum(isinstance(e, Message) for e in events) >= 5
            and any(isinstance(e, Mention) for e in events),
            "B's 5 Messages and 1 Mention",
        )
        messages_b = [e for e in events_b if isinstance(e, Message)]
        mentions_b = [e for e in events_b if isinstance(e, Mention)]
        others = [e for e in events_b if not isinstance(e, (Message, Mention))]
        expect(not others, f"B got unexpected events {others}")
        expect([m.seq for m in messages_b] == seqs, f"B's Message seqs {[m.seq for m in messages_b]} != {seqs}")
        expect([m.body for m in messages_b] == bodies, f"B's bodies {[m.body for m in messages_b]}")
        for index, message in enumerate(messages_b):
            expect(message.room_id == room and message.author_id == user_a,
                   f"B's Message {message} has the wrong room or author")
            expected_mentions = [user_b] if index == mention_index else []
            expect(message.mentions == expected_mentions,
                   f"Message {message.seq} mentions {message.mentions} != {expected_mentions}")
            expect(message.nonce == nonces[index], f"Message {message.seq} nonce {message.nonce!r}")
        self.passed("receiver_sees_messages_in_seq_order")
        expect(len(mentions_b) == 1, f"B got {len(mentions_b)} Mention events")
        mention = mentions_b[0]
        expect(
            (mention.room_id, mention.seq, mention.author_id, mention.body)
            == (room, seqs[mention_index], user_a, bodies[mention_index]),
            f"Mention {mention} does not match the mentioning message",
        )
        expect(mention.created_at_ms == messages_b[mention_index].created_at_ms,
               "Mention created_at_ms differs from its Message's")
        self.passed("mention_delivered_to_subscribed_user")

        # 4. B leaves, A sends 3, B resumes and gets exactly those 3.
        last_seen = messages_b[-1].seq
        await b.close()
        missed_bodies = [f"missed {number}" for number in range(1, 4)]
        missed_seqs = []
        for body in missed_bodies:
            missed_seqs.append((await a.send_message(room, body, nonce=new_nonce())).seq)
        expect(missed_seqs[0] > last_seen and missed_seqs == sorted(missed_seqs),
               f"missed seqs {missed_seqs} after {last_seen}")
        b = await self.connect_and_auth(self.args.token_b, "B (again)")
        replayed, subscribed = await b.subscribe(room, last_seen)
        replayed_messages = [e for e in replayed if isinstance(e, Message)]
        expect(len(replayed) == 3 and len(replayed_messages) == 3,
               f"resume replayed {replayed}, expected exactly the 3 missed messages")
        expect([m.seq for m in replayed_messages] == missed_seqs,
               f"replayed seqs {[m.seq for m in replayed_messages]} != {missed_seqs}")
        expect([m.body for m in replayed_messages] == missed_bodies, "replayed bodies differ")
        expect(subscribed.replayed == 3, f"Subscribed.replayed {subscribed.replayed} != 3")
        expect(subscribed.head_seq == missed_seqs[-1],
               f"Subscribed.head_seq {subscribed.head_seq} != {missed_seqs[-1]}")
        self.passed("resume_replays_exactly_the_missed_messages")
        live_sent = await a.send_message(room, "live after resume", nonce=new_nonce())
        live = await self.collect_events(b, lambda events: len(events) >= 1, "the live message")
        expect(isinstance(live[0], Message) and live[0].seq == live_sent.seq
               and live[0].body == "live after resume",
               f"after resume B got {live[0]}, expected the live message seq {live_sent.seq}")
        expect(live[0].seq > subscribed.head_seq, "live message seq not above head_seq")
        self.passed("live_after_resume")
        all_seqs = seqs + missed_seqs + [live_sent.seq]
        all_bodies = bodies + missed_bodies + ["live after resume"]

        # 5. Errors keep the connection; a text message closes it with 1003.
        c = await ChatClient.connect(self.url, self.step)
        rid = c.request_id()
        await c.send_raw(encode_typing(rid, room))
        error = await c.reply_or_error(rid)
        expect(isinstance(error, Error) and error.code_name == "not_authenticated",
               f"a command before Auth got {error}")
        auth_ok = await c.auth(self.args.token_a)
        rid = c.request_id()
        await c.send_raw(encode_auth(rid, self.args.token_a))
        error = await c.reply_or_error(rid)
        expect(isinstance(error, Error) and error.code_name == "already_authenticated",
               f"a second Auth got {error}")
        self.passed("auth_order_errors")
        await c.send_raw(b"\x04")
        error = await c.reply_or_error(0)
        expect(isinstance(error, Error) and error.code_name == "malformed",
               f"a one-byte frame 0x04 got {error}")
        expect(error.retry_after_ms == 0, f"malformed has retry_after_ms {error.retry_after_ms}")
        rid = c.request_id()
        await c.send_raw(encode_typing(rid, room) + b"\x00")
        error = await c.reply_or_error(rid)
        expect(isinstance(error, Error) and error.code_name == "malformed",
               f"a frame with a trailing byte got {error}")
        rid = c.request_id()
        await c.send_raw(struct.pack(">BI", 0x7E, rid))
        error = await c.reply_or_error(rid)
        expect(isinstance(error, Error) and error.code_name == "unknown_opcode",
               f"unknown opcode 0x7E got {error}")
        page = await c.history(room, before_seq=0, after_seq=-1, limit=1)
        expect(isinstance(page, HistoryPage) and [m.seq for m in page.messages] == [all_seqs[-1]],
               f"History after the errors got {page}")
        expect(auth_ok.user_id == user_a, "C authenticated as someone else")
        self.passed("malformed_frame_answered_and_connection_kept")
        await c.send_raw("this is text")
        code = await c.wait_closed()
        expect(code == CLOSE_UNSUPPORTED_DATA, f"a text message closed with {code}, expected 1003")
        self.passed("text_message_closes_1003")

        # 6. History.
        page = await b.history(room, before_seq=0, after_seq=0, limit=100)
        expect(page.room_id == room, f"HistoryPage room {page.room_id}")
        expect([m.seq for m in page.messages] == all_seqs,
               f"forward history seqs {[m.seq for m in page.messages]} != {all_seqs}")
        expect([m.body for m in page.messages] == all_bodies, "history bodies differ")
        for index, message in enumerate(page.messages):
            expect(message.author_id == user_a and message.deleted_at_ms == 0
                   and message.edited_at_ms == 0 and message.reactions == []
                   and message.thread_parent_seq == 0 and message.created_at_ms > 0,
                   f"history message {message} has unexpected fields")
            expected_mentions = [user_b] if index == mention_index else []
            expect(message.mentions == expected_mentions,
                   f"history message {message.seq} mentions {message.mentions}")
        expect(page.messages[mention_index].created_at_ms == messages_b[mention_index].created_at_ms,
               "History created_at_ms differs from the Message event's")
        # Backward paging: the newest 2, then the 2 before them.
        newest = await b.history(room, before_seq=0, after_seq=-1, limit=2)
        expect([m.seq for m in newest.messages] == all_seqs[-2:],
               f"newest page {[m.seq for m in newest.messages]} != {all_seqs[-2:]}")
        older = await b.history(room, before_seq=newest.messages[0].seq, after_seq=-1, limit=2)
        expect([m.seq for m in older.messages] == all_seqs[-4:-2],
               f"older page {[m.seq for m in older.messages]} != {all_seqs[-4:-2]}")
        # Forward paging ends with a short page.
        rest = await b.history(room, before_seq=0, after_seq=all_seqs[-3], limit=5)
        expect([m.seq for m in rest.messages] == all_seqs[-2:],
               f"forward page after {all_seqs[-3]}: {[m.seq for m in rest.messages]}")
        self.passed("history_pages")
        # Nothing else arrived: B has no events left; A only its own later messages.
        leftover_b = b.take_events()
        expect(not leftover_b, f"B: unexpected events left over: {leftover_b}")
        leftover_a = a.take_events()
        expect([(type(e).__name__, getattr(e, "seq", None)) for e in leftover_a]
               == [("Message", seq) for seq in missed_seqs + [live_sent.seq]],
               f"A: unexpected events left over: {leftover_a}")
        await a.close()
        await b.close()
        self.info["seqs"] = all_seqs


async def run_scenario(args) -> dict:
    scenario = Scenario(args)
    result = {"ok": False, "checks": scenario.checks, "info": scenario.info}
    started = time.monotonic()
    try:
        await asyncio.wait_for(scenario.run(), args.total_timeout)
        result["ok"] = True
    except asyncio.TimeoutError as error:
        result["error"] = f"timeout: {error or 'the scenario ran over its total timeout'}"
    except CheckFailed as error:
        result["error"] = f"check failed: {error}"
    except (ChatError, ConnectionClosedByServer, ProtocolViolation, MalformedFrame) as error:
        result["error"] = f"{type(error).__name__}: {error}"
    except Exception as error:  # a crash is a failure, reported like one
        result["error"] = f"{type(error).__name__}: {error}"
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws://HOST:PORT/v1/chat")
    parser.add_argument("--token-a", required=True)
    parser.add_argument("--token-b", required=True)
    parser.add_argument("--room", required=True, type=int)
    parser.add_argument("--user-id-a", type=int)
    parser.add_argument("--user-id-b", type=int)
    parser.add_argument("--step-timeout", type=float, default=5.0)
    parser.add_argument("--total-timeout", type=float, default=25.0)
    args = parser.parse_args()
    result = asyncio.run(run_scenario(args))
    result["websockets"] = websockets.__version__
    print(json.dumps(result), flush=True)
    if not result["ok"]:
        print(f"chat_client.py: FAILED: {result.get('error')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
