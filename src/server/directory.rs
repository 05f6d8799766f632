//! The room directory (`ListRooms`): pages of the store's rooms, most
//! recently active first, with only the rooms the caller may enter, and the
//! cursor that carries a client from one page to the next.
//!
//! A cursor is the position just after the last room a page looked at:
//! `"<time of its newest message, µs>:<room id>"`. Clients treat it as
//! opaque; it is plain text so that a bad one is refused with a reason
//! rather than misread.

use super::validate::Invalid;
use crate::storage::{RoomCursor, RoomRecord, RoomsQuery, Store, StoreError};

/// Most rooms one call looks at when the caller may enter only some of
/// them (a `rooms` claim): a page may then come back short, or empty, with
/// a cursor to go on from, rather than the call scanning every room of a
/// large server for a token that allows few.
pub const MAX_ROOMS_SCANNED: usize = 1000;

/// A page of the directory as the caller may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub rooms: Vec<RoomRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<RoomCursor>,
}

/// Reads the cursor a previous page gave (empty: the first page).
pub fn parse_cursor(cursor: &str) -> Result<Option<RoomCursor>, Invalid> {
    if cursor.is_empty() {
        return Ok(None);
    }
    let bad = || Invalid("cursor is not one a room list gave: pass next_cursor back as is".into());
    let (time, room_id) = cursor.split_once(':').ok_or_else(bad)?;
    let last_message_us = time.parse().map_err(|_| bad())?;
    if room_id.is_empty() {
        return Err(bad());
    }
    Ok(Some(RoomCursor {
        last_message_us,
        room_id: room_id.to_owned(),
    }))
}

pub fn format_cursor(cursor: &RoomCursor) -> String {
    format!("{}:{}", cursor.last_message_us, cursor.room_id)
}

/// Up to `limit` rooms after `after` that `may_list` lets through, looking
/// at no more than [`MAX_ROOMS_SCANNED`] of them.
pub fn list(
    store: &dyn Store,
    limit: usize,
    after: Option<RoomCursor>,
    may_list: impl Fn(&str) -> bool,
) -> Result<Listing, StoreError> {
    let mut rooms = Vec::new();
    let mut cursor = after;
    let mut scanned = 0;
    loop {
        // Rows enough that a filtered page rarely needs a second query.
        let page = store.rooms(&RoomsQuery {
            limit: limit.max(50),
            after: cursor.clone(),
        })?;
        let mut rest = page.rooms.into_iter();
        for room in rest.by_ref() {
            scanned += 1;
            cursor = Some(RoomCursor::after(&room));
            if may_list(&room.room_id) {
                rooms.push(room);
                if rooms.len() == limit {
                    break;
                }
            }
            if scanned == MAX_ROOMS_SCANNED {
                break;
            }
        }
        let more = page.has_more || rest.next().is_some();
        if !more {
            return Ok(Listing { rooms, next: None });
        }
        if rooms.len() == limit || scanned >= MAX_ROOMS_SCANNED {
            return Ok(Listing {
                rooms,
                next: cursor,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{NewMessage, SqliteOptions, SqliteStore, Write};

    fn store_with_rooms(dir: &tempfile::TempDir, count: usize) -> SqliteStore {
        let store =
            SqliteStore::open(&dir.path().join("chat.db"), SqliteOptions::default()).unwrap();
        // Room i's newest message is at time i: room-{count} is the newest.
        let writes = (1..=count)
            .map(|i| {
                Write::Message(NewMessage {
                    id: format!("m{i}"),
                    room_id: format!("room-{i:04}"),
                    sender_id: "ada".into(),
                    content: "hi".into(),
                    timestamp_us: i as i64,
                })
            })
            .collect();
        store.write_batch(writes).unwrap();
        store
    }

    fn names(listing: &Listing) -> Vec<String> {
        listing.rooms.iter().map(|r| r.room_id.clone()).collect()
    }

    #[test]
    fn a_cursor_survives_a_round_trip_and_a_bad_one_is_refused() {
        let cursor = RoomCursor {
            last_message_us: 1_700_000_000_000_000,
            room_id: "a:room:with colons".into(),
        };
        assert_eq!(parse_cursor(&format_cursor(&cursor)).unwrap(), Some(cursor));
        assert_eq!(parse_cursor("").unwrap(), None);
        for bad in ["x", "12", "12:", "abc:room", ":room"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_cover_every_room_once_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_rooms(&dir, 25);
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let listing = list(&store, 10, after, |_| true).unwrap();
            seen.extend(names(&listing));
            match listing.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let expected: Vec<_> = (1..=25).rev().map(|i| format!("room-{i:04}")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_filter_fills_pages_from_further_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_rooms(&dir, 30);
        let even = |room: &str| room.ends_with(['0', '2', '4', '6', '8']);
        let first = list(&store, 5, None, even).unwrap();
        assert_eq!(
            names(&first),
            [
                "room-0030",
                "room-0028",
                "room-0026",
                "room-0024",
                "room-0022"
            ]
        );
        let second = list(&store, 20, first.next, even).unwrap();
        assert_eq!(second.rooms.len(), 10);
        assert_eq!(second.next, None, "the last page says so");
        let none = list(&store, 5, None, |_| false).unwrap();
        assert_eq!((none.rooms.len(), none.next), (0, None));
    }

    #[test]
    fn a_filter_that_lets_little_through_stops_at_the_scan_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_rooms(&dir, MAX_ROOMS_SCANNED + 50);
        let oldest = |room: &str| room == "room-0001";
        let first = list(&store, 200, None, oldest).unwrap();
        assert!(first.rooms.is_empty());
        let next = first.next.clone().expect("a cursor to go on from");
        assert_eq!(next.room_id, format!("room-{:04}", 51));
        let second = list(&store, 200, Some(next), oldest).unwrap();
        assert_eq!(names(&second), ["room-0001"]);
        assert_eq!(second.next, None);
    }
}
