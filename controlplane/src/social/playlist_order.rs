//! The list operations of a playlist, with no I/O: the route loads the items
//! (at most `social.playlist_tracks_max`), changes them here, and writes the
//! result back as positions `0..n` in one transaction.
//!
//! Positions are indexes into the whole list, including items the caller
//! may no longer see (a track of someone else made private since): such an
//! item keeps its slot through a reorder, so a reorder never needs ids the
//! caller cannot know, and never moves what the caller cannot see.

/// One item of a playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaylistItem {
    /// The track.
    pub track_id: i64,
    /// When it was added (Unix ms); kept through moves.
    pub added_at_ms: i64,
}

/// Why a list operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// The track is in the playlist already (a track appears at most once).
    #[error("the track is in the playlist already, at position {position}")]
    AlreadyPresent {
        /// Where it is.
        position: usize,
    },
    /// The playlist holds the most tracks allowed.
    #[error(
        "the playlist holds {items_max} tracks, the most allowed (social.playlist_tracks_max)"
    )]
    Full {
        /// The bound.
        items_max: usize,
    },
    /// An insertion position past the end.
    #[error("position {position} is past the end of the playlist ({length} tracks)")]
    PositionPastEnd {
        /// The position asked for.
        position: usize,
        /// The playlist's length.
        length: usize,
    },
    /// No item at this position.
    #[error("the playlist has no track at position {position}")]
    NoSuchPosition {
        /// The position asked for.
        position: usize,
    },
    /// A reorder that is not a permutation of the visible items.
    #[error("track_ids must hold each track of the playlist that you can see exactly once ({expected} tracks); {reason}")]
    NotAPermutation {
        /// How many ids were expected.
        expected: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Inserts `item` at `position` (`None`: at the end), shifting the items
/// from there on by one.
pub fn insert(
    items: &mut Vec<PlaylistItem>,
    item: PlaylistItem,
    position: Option<usize>,
    items_max: usize,
) -> Result<usize, OrderError> {
    if let Some(position) = items.iter().position(|held| held.track_id == item.track_id) {
        return Err(OrderError::AlreadyPresent { position });
    }
    if items.len() >= items_max {
        return Err(OrderError::Full { items_max });
    }
    let position = position.unwrap_or(items.len());
    if position > items.len() {
        return Err(OrderError::PositionPastEnd {
            position,
            length: items.len(),
        });
    }
    items.insert(position, item);
    Ok(position)
}

/// Removes the item at `position`, closing the gap.
pub fn remove(items: &mut Vec<PlaylistItem>, position: usize) -> Result<PlaylistItem, OrderError> {
    if position >= items.len() {
        return Err(OrderError::NoSuchPosition { position });
    }
    Ok(items.remove(position))
}

/// Puts the items the caller sees (`is_visible`) into the order of
/// `track_ids`, which must name each of them exactly once; the items the
/// caller does not see stay at their positions.
pub fn reorder(
    items: &mut [PlaylistItem],
    is_visible: impl Fn(i64) -> bool,
    track_ids: &[i64],
) -> Result<(), OrderError> {
    let visible_slots: Vec<usize> = (0..items.len())
        .filter(|&slot| is_visible(items[slot].track_id))
        .collect();
    let refuse = |reason: String| OrderError::NotAPermutation {
        expected: visible_slots.len(),
        reason,
    };
    if track_ids.len() != visible_slots.len() {
        return Err(refuse(format!("{} were given", track_ids.len())));
    }
    let mut reordered = Vec::with_capacity(track_ids.len());
    for (index, track_id) in track_ids.iter().enumerate() {
        if track_ids[..index].contains(track_id) {
            return Err(refuse(format!("track {track_id} is given twice")));
        }
        let found = visible_slots
            .iter()
            .map(|&slot| items[slot])
            .find(|item| item.track_id == *track_id)
            .ok_or_else(|| refuse(format!("track {track_id} is not in the playlist")))?;
        reordered.push(found);
    }
    for (slot, item) in visible_slots.into_iter().zip(reordered) {
        items[slot] = item;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(track_ids: &[i64]) -> Vec<PlaylistItem> {
        track_ids
            .iter()
            .map(|&track_id| PlaylistItem {
                track_id,
                added_at_ms: track_id * 10,
            })
            .collect()
    }

    fn ids(items: &[PlaylistItem]) -> Vec<i64> {
        items.iter().map(|item| item.track_id).collect()
    }

    fn item(track_id: i64) -> PlaylistItem {
        PlaylistItem {
            track_id,
            added_at_ms: 0,
        }
    }

    #[test]
    fn insert_appends_or_shifts_and_refuses_duplicates_overflow_and_gaps() {
        let mut list = items(&[1, 2, 3]);
        assert_eq!(insert(&mut list, item(4), None, 10), Ok(3));
        assert_eq!(insert(&mut list, item(5), Some(0), 10), Ok(0));
        assert_eq!(insert(&mut list, item(6), Some(2), 10), Ok(2));
        assert_eq!(ids(&list), [5, 1, 6, 2, 3, 4]);
        assert_eq!(
            insert(&mut list, item(2), None, 10),
            Err(OrderError::AlreadyPresent { position: 3 })
        );
        assert_eq!(
            insert(&mut list, item(7), Some(7), 10),
            Err(OrderError::PositionPastEnd {
                position: 7,
                length: 6
            })
        );
        assert_eq!(insert(&mut list, item(7), Some(6), 7), Ok(6));
        assert_eq!(
            insert(&mut list, item(8), None, 7),
            Err(OrderError::Full { items_max: 7 })
        );
        assert_eq!(ids(&list), [5, 1, 6, 2, 3, 4, 7]);
    }

    #[test]
    fn remove_closes_the_gap_and_refuses_positions_past_the_end() {
        let mut list = items(&[1, 2, 3]);
        assert_eq!(remove(&mut list, 1).map(|item| item.track_id), Ok(2));
        assert_eq!(ids(&list), [1, 3]);
        assert_eq!(
            remove(&mut list, 2),
            Err(OrderError::NoSuchPosition { position: 2 })
        );
    }

    #[test]
    fn reorder_is_a_permutation_of_the_visible_items_and_keeps_their_added_times() {
        let mut list = items(&[1, 2, 3]);
        reorder(&mut list, |_| true, &[3, 1, 2]).unwrap();
        assert_eq!(ids(&list), [3, 1, 2]);
        assert_eq!(list[0].added_at_ms, 30, "an item keeps its added time");
        for (given, reason) in [
            (vec![3, 1], "2 were given"),
            (vec![3, 1, 2, 4], "4 were given"),
            (vec![3, 3, 1], "track 3 is given twice"),
            (vec![3, 1, 9], "track 9 is not in the playlist"),
        ] {
            let error = reorder(&mut list, |_| true, &given).unwrap_err();
            assert!(error.to_string().contains(reason), "{given:?}: {error}");
        }
        assert_eq!(ids(&list), [3, 1, 2], "a refused reorder changes nothing");
    }

    #[test]
    fn reorder_leaves_hidden_items_in_their_slots_and_refuses_their_ids() {
        let mut list = items(&[1, 2, 3, 4]);
        let hidden = |track_id: i64| track_id == 2;
        reorder(&mut list, |track_id| !hidden(track_id), &[4, 3, 1]).unwrap();
        assert_eq!(ids(&list), [4, 2, 3, 1]);
        let error = reorder(&mut list, |track_id| !hidden(track_id), &[2, 4, 3]).unwrap_err();
        assert!(error.to_string().contains("track 2 is not in"), "{error}");
    }
}
