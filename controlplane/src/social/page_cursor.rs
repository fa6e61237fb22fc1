//! The paging cursor of lists ordered by a time and then an id (the feed,
//! comments): `"{time}_{id}"`, opaque to clients, who pass back the
//! `next_after` of the previous page. A pair is needed because times repeat;
//! the id settles ties, so every item has one place in the order and no
//! item is shown twice or skipped when items share a time.

/// A position in a list ordered by `(time, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    /// The time (Unix ms, or a timestamp in a track) of the last item shown.
    pub time_ms: i64,
    /// The id of the last item shown.
    pub id: i64,
}

impl PageCursor {
    /// The text clients see.
    pub fn encode(self) -> String {
        format!("{}_{}", self.time_ms, self.id)
    }

    /// Reads what [`PageCursor::encode`] wrote; `None` for anything else.
    pub fn parse(text: &str) -> Option<PageCursor> {
        let (time_ms, id) = text.split_once('_')?;
        Some(PageCursor {
            time_ms: time_ms.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

/// The cursor of a query's `after`, refused (422 naming `after`) when it is
/// not one this server wrote.
pub fn parse_after(after: Option<&str>) -> Result<Option<PageCursor>, crate::error::ApiError> {
    after
        .map(|text| {
            PageCursor::parse(text).ok_or_else(|| {
                crate::error::ApiError::validation(
                    "after must be the next_after of a previous page",
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_text_is_refused() {
        for cursor in [
            PageCursor { time_ms: 0, id: 1 },
            PageCursor {
                time_ms: 1_763_000_000_000,
                id: i64::MAX,
            },
            PageCursor { time_ms: -5, id: 7 },
        ] {
            assert_eq!(PageCursor::parse(&cursor.encode()), Some(cursor));
        }
        for text in ["", "12", "12_", "_3", "a_b", "1_2_3", "1.5_2"] {
            assert_eq!(PageCursor::parse(text), None, "{text:?}");
        }
        assert!(parse_after(Some("nope")).is_err());
        assert_eq!(parse_after(None).unwrap(), None);
    }
}
