//! The reusable client side of every scenario.
//!
//! - [`client_threads`]: pinned threads with one `current_thread` runtime
//!   each, the [`client_threads::ThreadWorkload`] a scenario implements, and
//!   the [`client_threads::MeasurementWindow`] they all share.
//! - [`websocket_client`]: TCP connect and the HTTP upgrade, by hand.
//! - [`client_frame`]: masked frames into a reused buffer, server frames
//!   decoded, both with `veza_codec::websocket`.
//! - [`echo_payload`]: payloads stamped with a sequence number and send time.
//! - [`latency`]: microsecond histograms and their percentiles.
//! - [`precise_timer`]: a `timerfd` sleep with microsecond precision, for
//!   open-loop pacing without a spinning client core.
//! - [`source_address`]: 127.0.0.2, 127.0.0.3, … as source addresses for
//!   many connections.
//!
//! Architecture Invariant: the hot path allocates nothing per message:
//! payloads are stamped in place, frames are written into a reused buffer,
//! replies are split off the read buffer without copying.

pub mod client_frame;
pub mod client_threads;
pub mod echo_payload;
pub mod latency;
pub mod precise_timer;
pub mod source_address;
pub mod websocket_client;
