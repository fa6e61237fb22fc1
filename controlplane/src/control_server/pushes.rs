//! Turns committed changes ([`ControlEvent`]s from the event hub) into push
//! frames, encoded once and broadcast to every connection as the same
//! `Bytes`.
//!
//! Pushes carry the new state where the data plane needs it at once (the
//! whole settings, the whole key set), so a data plane never has to ask back.

use bytes::Bytes;
use tokio::sync::{broadcast, watch};
use veza_proto::control::{FrameEncoder, Push, ServerFrame};

use crate::events::ControlEvent;
use crate::state::AppState;

use super::{operations, stopped};

/// Encodes a push frame.
pub fn encode(push: Push, frame_bytes_max: usize) -> Option<Bytes> {
    match FrameEncoder::new(frame_bytes_max).encode_to_bytes(&ServerFrame::Push(push)) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::error!(%error, "push cannot be encoded");
            None
        }
    }
}

/// Subscribes to the event hub and broadcasts every change as a push until
/// `stop` turns true.
pub async fn fan_out(
    state: AppState,
    pushes: broadcast::Sender<Bytes>,
    mut stop: watch::Receiver<bool>,
) {
    let mut events = state.events.subscribe();
    let frame_bytes_max = state.config.control.frame_bytes_max;
    loop {
        let push = tokio::select! {
            _ = stopped(&mut stop) => return,
            event = events.recv() => match event {
                Ok(event) => to_push(&state, event).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "control events were lost; telling every data plane to resynchronise");
                    Push::Resync
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if let Some(frame) = encode(push, frame_bytes_max) {
            // No connection listening is fine.
            let _ = pushes.send(frame);
        }
    }
}

/// The push for one event. Looks up what the push carries; if that lookup
/// fails, data planes are told to resynchronise instead.
async fn to_push(state: &AppState, event: ControlEvent) -> Push {
    match event {
        // The current settings, which are at least as new as the event's.
        ControlEvent::ConfigChanged { version: _ } => match operations::config(state).await {
            Ok((version, settings)) => Push::ConfigChanged { version, settings },
            Err(error) => {
                tracing::error!(message = %error.message, "settings lookup for a push failed");
                Push::Resync
            }
        },
        ControlEvent::SigningKeysChanged => match operations::signing_keys(state).await {
            Ok(keys) => Push::SigningKeysChanged { keys },
            Err(error) => {
                tracing::error!(message = %error.message, "signing key lookup for a push failed");
                Push::Resync
            }
        },
        ControlEvent::TokensRevoked {
            token_ids,
            user_id,
            expires_at_ms,
        } => Push::TokensRevoked {
            token_ids,
            user_id,
            expires_at_ms,
        },
        ControlEvent::MembershipChanged { room_id, user_id } => {
            Push::MembershipChanged { room_id, user_id }
        }
        ControlEvent::ModerationChanged { room_id, user_id } => {
            Push::ModerationChanged { room_id, user_id }
        }
        ControlEvent::RoomChanged { room_id } => Push::RoomChanged { room_id },
        ControlEvent::TrackChanged { track_id } => Push::TrackChanged { track_id },
    }
}
