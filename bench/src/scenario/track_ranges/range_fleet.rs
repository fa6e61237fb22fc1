//! The client processes of `track-ranges`: a [`ProcessFleet`] of
//! `track-range-process` children.

use crate::process_fleet::FleetEvent;
pub use crate::process_fleet::ProcessFleet;

use super::range_process::{RangeEvent, RangeProcessReport};

/// The running client processes.
pub type RangeFleet = ProcessFleet<RangeEvent>;

impl FleetEvent for RangeEvent {
    type Report = RangeProcessReport;

    fn failure(&self) -> Option<&str> {
        match self {
            RangeEvent::Failed { reason } => Some(reason),
            _ => None,
        }
    }

    fn into_report(self) -> Option<RangeProcessReport> {
        match self {
            RangeEvent::Finished(report) => Some(*report),
            _ => None,
        }
    }
}
