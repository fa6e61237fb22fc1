//! Every opcode, the first byte of each frame. Client commands are
//! 0x01–0x7F, server replies 0x80–0x8F (they carry the command's request
//! id), server events 0x90–0xFF (they carry none).

/// Client: authenticate with an access token.
pub const AUTH: u8 = 0x01;
/// Client: subscribe to a room, optionally resuming after a seq.
pub const SUBSCRIBE: u8 = 0x02;
/// Client: end a subscription.
pub const UNSUBSCRIBE: u8 = 0x03;
/// Client: post a message.
pub const SEND: u8 = 0x04;
/// Client: replace a message's body.
pub const EDIT: u8 = 0x05;
/// Client: delete a message.
pub const DELETE: u8 = 0x06;
/// Client: add or remove a reaction.
pub const REACT: u8 = 0x07;
/// Client: announce that the user is typing.
pub const TYPING: u8 = 0x08;
/// Client: set the user's presence on this connection.
pub const SET_PRESENCE: u8 = 0x09;
/// Client: record how far the user has read.
pub const READ_MARKER: u8 = 0x0A;
/// Client: fetch a page of stored messages.
pub const HISTORY: u8 = 0x0B;
/// Client: receive a live stream's now-playing titles.
pub const WATCH_STREAM: u8 = 0x0C;
/// Client: stop receiving a live stream's now-playing titles.
pub const UNWATCH_STREAM: u8 = 0x0D;

/// Server reply: generic success.
pub const OK: u8 = 0x80;
/// Server reply: authenticated.
pub const AUTH_OK: u8 = 0x81;
/// Server reply: subscribed (after any replayed events).
pub const SUBSCRIBED: u8 = 0x82;
/// Server reply: the sent message is committed.
pub const SENT: u8 = 0x83;
/// Server reply: a page of history.
pub const HISTORY_PAGE: u8 = 0x84;
/// Server reply: the command failed.
pub const ERROR: u8 = 0x8F;

/// Server event: a new message.
pub const MESSAGE: u8 = 0x90;
/// Server event: a message was edited.
pub const EDITED: u8 = 0x91;
/// Server event: a message was deleted.
pub const DELETED: u8 = 0x92;
/// Server event: a reaction was added or removed.
pub const REACTION: u8 = 0x93;
/// Server event: a user is typing.
pub const TYPING_EVENT: u8 = 0x94;
/// Server event: a user's presence changed.
pub const PRESENCE: u8 = 0x95;
/// Server event: the user was mentioned.
pub const MENTION: u8 = 0x96;
/// Server event: the server ended a subscription.
pub const REMOVED: u8 = 0x97;
/// Server event: a watched live stream's now-playing title.
pub const NOW_PLAYING: u8 = 0x98;

/// The first opcode of the event range: frames from it on carry no request id.
pub const FIRST_EVENT: u8 = 0x90;
