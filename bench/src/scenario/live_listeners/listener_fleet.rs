//! The listener processes of `live-listeners`: a [`ProcessFleet`] of
//! `live-listener-process` children.

use crate::process_fleet::FleetEvent;
pub use crate::process_fleet::ProcessFleet;

use super::listener_process::{ListenerEvent, ListenerProcessReport};

/// The running listener processes.
pub type ListenerFleet = ProcessFleet<ListenerEvent>;

impl FleetEvent for ListenerEvent {
    type Report = ListenerProcessReport;

    fn failure(&self) -> Option<&str> {
        match self {
            ListenerEvent::Failed { reason } => Some(reason),
            _ => None,
        }
    }

    fn into_report(self) -> Option<ListenerProcessReport> {
        match self {
            ListenerEvent::Finished(report) => Some(*report),
            _ => None,
        }
    }
}
