//! The semantics every engine must share, as tests: each takes an
//! [`Engine`] and is run against SQLite (`sqlite.rs`) and PostgreSQL
//! (`postgres.rs`) by [`conformance_tests!`].

use super::{
    ChangeKind, ChangeRefused, ChangesQuery, HistoryPage, HistoryQuery, MessageChange, NewMessage,
    RoomCursor, RoomRecord, RoomsQuery, Store, StoredMessage, UserRecord, Write, Written,
};

/// Opens stores over one database: a second `open` (after the first store
/// is dropped) sees what the first one stored.
pub(super) trait Engine {
    type Store: Store;
    fn open(&self) -> Self::Store;
}

/// One `#[test]` per conformance test, on the engine `$engine` makes.
macro_rules! conformance_tests {
    ($engine:expr) => {
        conformance_tests!(@each $engine; seqs_start_at_one_per_room, duplicates_return_the_original_and_consume_no_seq, users, an_edit_keeps_the_seq_and_takes_the_rooms_next_revision, revisions_survive_a_reopen_and_changes_page_in_their_order, rooms_are_listed_by_their_newest_message, history_pages_backwards, history_pages_forwards_and_in_ranges, pages_have_no_gap_or_overlap, history_of_an_unknown_room_is_empty, reopening_keeps_data_and_seq, readers_run_concurrently_with_the_writer, a_message_changed_in_its_own_batch);
    };
    (@each $engine:expr; $($name:ident),*) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    let engine = $engine;
                    crate::storage::conformance::$name(&engine);
                }
            )*
        }
    };
}
pub(super) use conformance_tests;

pub(super) fn message(room: &str, sender: &str, id: &str, content: &str) -> Write {
    Write::Message(NewMessage {
        id: id.into(),
        room_id: room.into(),
        sender_id: sender.into(),
        content: content.into(),
        timestamp_us: 1_000,
    })
}

/// The seq of a `Stored`, panicking on anything else.
pub(super) fn stored_seq(written: &Written) -> u64 {
    match written {
        Written::Stored(message) => message.seq,
        other => panic!("expected Stored, got {other:?}"),
    }
}

/// The seqs of a page of room "r", and whether there is more.
pub(super) fn history<S: Store + ?Sized>(
    store: &S,
    limit: usize,
    before_seq: u64,
    after_seq: Option<u64>,
) -> (Vec<u64>, bool) {
    let page = store
        .history(&HistoryQuery {
            room_id: "r".into(),
            limit,
            before_seq,
            after_seq,
        })
        .unwrap();
    let seqs = page.messages.iter().map(|m| m.seq).collect();
    (seqs, page.has_more)
}

/// A store with messages 1..=count in room "r", committed over several batches.
pub(super) fn store_with_history<E: Engine>(engine: &E, count: u64) -> E::Store {
    let store = engine.open();
    let writes: Vec<_> = (1..=count)
        .map(|i| message("r", "alice", &format!("m{i}"), &format!("text {i}")))
        .collect();
    for chunk in writes.chunks(40) {
        store.write_batch(chunk.to_vec()).unwrap();
    }
    store
}

pub(super) fn seqs_start_at_one_per_room(engine: &impl Engine) {
    let store = engine.open();
    let written = store
        .write_batch(vec![
            message("a", "alice", "1", "x"),
            message("b", "alice", "2", "x"),
            message("a", "bob", "3", "x"),
        ])
        .unwrap();
    let seqs: Vec<_> = written.iter().map(stored_seq).collect();
    assert_eq!(seqs, [1, 1, 2]);
    let written = store
        .write_batch(vec![message("a", "alice", "4", "x")])
        .unwrap();
    assert_eq!(stored_seq(&written[0]), 3);
    assert_eq!(
        written[0],
        Written::Stored(StoredMessage {
            id: "4".into(),
            room_id: "a".into(),
            sender_id: "alice".into(),
            content: "x".into(),
            timestamp_us: 1_000,
            seq: 3,
            edited_us: None,
            deleted: false,
            revision: 0,
        })
    );
}

pub(super) fn duplicates_return_the_original_and_consume_no_seq(engine: &impl Engine) {
    let store = engine.open();
    let first = store
        .write_batch(vec![
            message("r", "alice", "m1", "original"),
            message("r", "alice", "m1", "retry in the same batch"),
        ])
        .unwrap();
    let Written::Stored(original) = &first[0] else {
        panic!("expected Stored, got {:?}", first[0]);
    };
    assert_eq!(first[1], Written::Duplicate(original.clone()));

    let again = store
        .write_batch(vec![
            message("r", "alice", "m1", "retry in a later batch"),
            // Same id from another sender, or in another room: distinct messages.
            message("r", "bob", "m1", "y"),
            message("other", "alice", "m1", "z"),
        ])
        .unwrap();
    assert_eq!(again[0], Written::Duplicate(original.clone()));
    assert_eq!(stored_seq(&again[1]), 2);
    assert_eq!(stored_seq(&again[2]), 1);
    drop(store);

    let store = engine.open();
    let reopened = store
        .write_batch(vec![
            message("r", "alice", "m1", "retry after reopening"),
            message("r", "alice", "m2", "new"),
        ])
        .unwrap();
    assert_eq!(reopened[0], Written::Duplicate(original.clone()));
    assert_eq!(stored_seq(&reopened[1]), 3);
}

pub(super) fn users(engine: &impl Engine) {
    let store = engine.open();
    assert_eq!(store.get_user("nobody").unwrap(), None);

    let written = store
        .write_batch(vec![
            message("r", "alice", "m1", "x"),
            Write::EnsureUser {
                user_id: "alice".into(),
                name: None,
                now_us: 5,
            },
            Write::EnsureUser {
                user_id: "bob".into(),
                name: None,
                now_us: 6,
            },
            Write::SetUserName {
                user_id: "bob".into(),
                name: "Bob".into(),
                now_us: 7,
            },
            Write::SetUserName {
                user_id: "carol".into(),
                name: "Carol".into(),
                now_us: 8,
            },
            // A name claim names a new user, and leaves a known one be.
            Write::EnsureUser {
                user_id: "dave".into(),
                name: Some("Dave".into()),
                now_us: 9,
            },
            Write::EnsureUser {
                user_id: "bob".into(),
                name: Some("Robert".into()),
                now_us: 10,
            },
        ])
        .unwrap();
    let user = |id: &str, name: &str, created_at_us| UserRecord {
        id: id.into(),
        name: name.into(),
        created_at_us,
    };
    // Registered by its message, with the message's time: EnsureUser keeps it.
    assert_eq!(written[1], Written::User(user("alice", "alice", 1_000)));
    assert_eq!(written[2], Written::User(user("bob", "bob", 6)));
    assert_eq!(written[3], Written::User(user("bob", "Bob", 6)));
    assert_eq!(written[4], Written::User(user("carol", "Carol", 8)));
    assert_eq!(written[5], Written::User(user("dave", "Dave", 9)));
    assert_eq!(written[6], Written::User(user("bob", "Bob", 6)));

    assert_eq!(
        store.get_user("alice").unwrap(),
        Some(user("alice", "alice", 1_000))
    );
    assert_eq!(store.get_user("bob").unwrap(), Some(user("bob", "Bob", 6)));
    drop(store);
    let store = engine.open();
    assert_eq!(
        store.get_user("carol").unwrap(),
        Some(user("carol", "Carol", 8))
    );
    let written = store
        .write_batch(vec![Write::EnsureUser {
            user_id: "carol".into(),
            name: None,
            now_us: 9,
        }])
        .unwrap();
    assert_eq!(written[0], Written::User(user("carol", "Carol", 8)));
}

pub(super) fn change(room: &str, seq: u64, sender: &str, kind: ChangeKind) -> Write {
    Write::Change(MessageChange {
        room_id: room.into(),
        seq,
        sender_id: sender.into(),
        kind,
        now_us: 5_000,
    })
}

pub(super) fn edit(seq: u64, sender: &str, content: &str) -> Write {
    change("r", seq, sender, ChangeKind::Edit(content.into()))
}

pub(super) fn delete(seq: u64, sender: &str) -> Write {
    change("r", seq, sender, ChangeKind::Delete)
}

pub(super) fn changes<S: Store + ?Sized>(
    store: &S,
    after_revision: u64,
    limit: usize,
) -> HistoryPage {
    store
        .changes(&ChangesQuery {
            room_id: "r".into(),
            limit,
            after_revision,
        })
        .unwrap()
}

pub(super) fn an_edit_keeps_the_seq_and_takes_the_rooms_next_revision(engine: &impl Engine) {
    let store = store_with_history(engine, 3);
    let written = store
        .write_batch(vec![
            edit(2, "alice", "fixed"),
            // The same edit again changes nothing and takes no revision.
            edit(2, "alice", "fixed"),
            delete(3, "alice"),
            delete(3, "alice"),
            edit(3, "alice", "too late"),
            edit(1, "bob", "not mine"),
            edit(9, "alice", "nowhere"),
            change("nowhere", 1, "alice", ChangeKind::Delete),
            message("r", "alice", "m4", "new"),
        ])
        .unwrap();
    let Written::Changed(edited) = &written[0] else {
        panic!("{:?}", written[0]);
    };
    assert_eq!(
        (
            edited.seq,
            edited.content.as_str(),
            edited.edited_us,
            edited.revision
        ),
        (2, "fixed", Some(5_000), 1)
    );
    assert_eq!(edited.id, "m2");
    assert_eq!(written[1], Written::Unchanged(edited.clone()));
    let Written::Changed(deleted) = &written[2] else {
        panic!("{:?}", written[2]);
    };
    assert_eq!(
        (deleted.deleted, deleted.content.as_str(), deleted.revision),
        (true, "", 2)
    );
    assert_eq!(written[3], Written::Unchanged(deleted.clone()));
    assert_eq!(written[4], Written::Refused(ChangeRefused::Deleted));
    assert_eq!(written[5], Written::Refused(ChangeRefused::NotSender));
    assert_eq!(written[6], Written::Refused(ChangeRefused::NotFound));
    assert_eq!(written[7], Written::Refused(ChangeRefused::NotFound));
    assert_eq!(stored_seq(&written[8]), 4, "edits take no seq");

    // History shows the messages as they are now, at their seqs.
    let page = store
        .history(&HistoryQuery {
            room_id: "r".into(),
            limit: 10,
            before_seq: 0,
            after_seq: None,
        })
        .unwrap();
    assert_eq!(page.revision, 2);
    let seqs: Vec<_> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(page.messages[1], *edited);
    assert_eq!(page.messages[2], *deleted);
    // No room was created by the change to a room that does not exist.
    assert_eq!(
        store
            .rooms(&RoomsQuery {
                limit: 10,
                after: None
            })
            .unwrap()
            .rooms
            .len(),
        1
    );

    // A resend of an edited message is confirmed with it as it is now.
    let again = store
        .write_batch(vec![message("r", "alice", "m2", "text 2")])
        .unwrap();
    assert_eq!(again[0], Written::Duplicate(edited.clone()));
}

pub(super) fn revisions_survive_a_reopen_and_changes_page_in_their_order(engine: &impl Engine) {
    let store = store_with_history(engine, 10);
    store
        .write_batch(vec![edit(5, "alice", "a"), edit(2, "alice", "b")])
        .unwrap();
    drop(store);
    let store = engine.open();
    store
        .write_batch(vec![edit(7, "alice", "c"), edit(5, "alice", "d")])
        .unwrap();
    let ids = |page: &HistoryPage| -> Vec<(u64, u64)> {
        page.messages.iter().map(|m| (m.seq, m.revision)).collect()
    };
    // Message 5 changed twice: it appears once, at its last change.
    let all = changes(&store, 0, 10);
    assert_eq!(ids(&all), [(2, 2), (7, 3), (5, 4)]);
    assert_eq!((all.has_more, all.revision), (false, 4));
    let first = changes(&store, 0, 2);
    assert_eq!((ids(&first), first.has_more), (vec![(2, 2), (7, 3)], true));
    let rest = changes(&store, 3, 2);
    assert_eq!((ids(&rest), rest.has_more), (vec![(5, 4)], false));
    assert_eq!(changes(&store, 4, 2).messages, []);
    let unknown = store
        .changes(&ChangesQuery {
            room_id: "nowhere".into(),
            limit: 5,
            after_revision: 0,
        })
        .unwrap();
    assert_eq!((unknown.messages.len(), unknown.revision), (0, 0));
}

pub(super) fn rooms_are_listed_by_their_newest_message(engine: &impl Engine) {
    let store = engine.open();
    let at = |room: &str, id: &str, timestamp_us| {
        Write::Message(NewMessage {
            id: id.into(),
            room_id: room.into(),
            sender_id: "ada".into(),
            content: "x".into(),
            timestamp_us,
        })
    };
    store
        .write_batch(vec![at("a", "1", 10), at("b", "2", 20), at("a", "3", 30)])
        .unwrap();
    store.write_batch(vec![at("c", "4", 25)]).unwrap();
    // An edit is no activity: "c" stays behind "a".
    store
        .write_batch(vec![change("c", 1, "ada", ChangeKind::Edit("y".into()))])
        .unwrap();
    let page = store
        .rooms(&RoomsQuery {
            limit: 10,
            after: None,
        })
        .unwrap();
    assert_eq!(
        page.rooms,
        [
            RoomRecord {
                room_id: "a".into(),
                last_seq: 2,
                last_message_us: 30
            },
            RoomRecord {
                room_id: "c".into(),
                last_seq: 1,
                last_message_us: 25
            },
            RoomRecord {
                room_id: "b".into(),
                last_seq: 1,
                last_message_us: 20
            },
        ]
    );
    assert!(!page.has_more);
    let first = store
        .rooms(&RoomsQuery {
            limit: 2,
            after: None,
        })
        .unwrap();
    assert!(first.has_more);
    let after = Some(RoomCursor::after(&first.rooms[1]));
    let rest = store.rooms(&RoomsQuery { limit: 2, after }).unwrap();
    assert_eq!(
        (rest.rooms, rest.has_more),
        (vec![page.rooms[2].clone()], false)
    );
}

pub(super) fn history_pages_backwards(engine: &impl Engine) {
    let store = store_with_history(engine, 130);
    assert_eq!(history(&store, 50, 0, None), ((81..=130).collect(), true));
    assert_eq!(history(&store, 50, 81, None), ((31..=80).collect(), true));
    assert_eq!(history(&store, 50, 31, None), ((1..=30).collect(), false));
    // A page that ends exactly at the first message.
    assert_eq!(history(&store, 50, 51, None), ((1..=50).collect(), false));
    assert_eq!(history(&store, 50, 1, None), (vec![], false));

    let page = store
        .history(&HistoryQuery {
            room_id: "r".into(),
            limit: 1,
            before_seq: 0,
            after_seq: None,
        })
        .unwrap();
    assert_eq!(
        page.messages,
        [StoredMessage {
            id: "m130".into(),
            room_id: "r".into(),
            sender_id: "alice".into(),
            content: "text 130".into(),
            timestamp_us: 1_000,
            seq: 130,
            edited_us: None,
            deleted: false,
            revision: 0,
        }]
    );
}

pub(super) fn history_pages_forwards_and_in_ranges(engine: &impl Engine) {
    let store = store_with_history(engine, 130);
    // After seq 0: from the very first message, oldest first.
    assert_eq!(history(&store, 50, 0, Some(0)), ((1..=50).collect(), true));
    assert_eq!(
        history(&store, 50, 0, Some(30)),
        ((31..=80).collect(), true)
    );
    assert_eq!(
        history(&store, 50, 0, Some(80)),
        ((81..=130).collect(), false)
    );
    assert_eq!(
        history(&store, 30, 0, Some(100)),
        ((101..=130).collect(), false)
    );
    assert_eq!(history(&store, 50, 0, Some(130)), (vec![], false));
    // Both bounds: more within the range, then exactly the range.
    assert_eq!(
        history(&store, 5, 20, Some(10)),
        ((11..=15).collect(), true)
    );
    assert_eq!(
        history(&store, 9, 20, Some(10)),
        ((11..=19).collect(), false)
    );
    assert_eq!(
        history(&store, 50, u64::MAX, Some(u64::MAX)),
        (vec![], false)
    );
}

pub(super) fn pages_have_no_gap_or_overlap(engine: &impl Engine) {
    let store = store_with_history(engine, 130);
    let mut backwards = Vec::new();
    let mut before = 0;
    loop {
        let (seqs, has_more) = history(&store, 7, before, None);
        before = seqs[0];
        backwards.splice(0..0, seqs);
        if !has_more {
            break;
        }
    }
    assert_eq!(backwards, (1..=130).collect::<Vec<_>>());

    let mut forwards = Vec::new();
    let mut after = 1;
    loop {
        let (seqs, has_more) = history(&store, 7, 0, Some(after));
        after = *seqs.last().unwrap();
        forwards.extend(seqs);
        if !has_more {
            break;
        }
    }
    assert_eq!(forwards, (2..=130).collect::<Vec<_>>());
}

pub(super) fn history_of_an_unknown_room_is_empty(engine: &impl Engine) {
    let store = store_with_history(engine, 3);
    for (before, after) in [(0, None), (10, None), (0, Some(1)), (0, Some(0))] {
        let page = store
            .history(&HistoryQuery {
                room_id: "nowhere".into(),
                limit: 50,
                before_seq: before,
                after_seq: after,
            })
            .unwrap();
        assert_eq!(
            page,
            HistoryPage {
                messages: vec![],
                has_more: false,
                revision: 0,
            }
        );
    }
}

pub(super) fn reopening_keeps_data_and_seq(engine: &impl Engine) {
    drop(store_with_history(engine, 130));
    let store = engine.open();
    assert_eq!(history(&store, 500, 0, None), ((1..=130).collect(), false));
    let written = store
        .write_batch(vec![message("r", "bob", "new", "x")])
        .unwrap();
    assert_eq!(stored_seq(&written[0]), 131);
}

pub(super) fn readers_run_concurrently_with_the_writer(engine: &impl Engine) {
    let store = store_with_history(engine, 10);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..200 {
                    let (seqs, _) = history(&store, 5, 0, None);
                    assert_eq!(seqs.len(), 5);
                    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
                }
            });
        }
        for i in 0..200 {
            store
                .write_batch(vec![message("r", "bob", &format!("b{i}"), "x")])
                .unwrap();
        }
    });
    assert_eq!(history(&store, 1, 0, None), (vec![210], true));
}

/// A message stored, resent, edited and deleted within one batch: each
/// write sees the ones before it.
pub(super) fn a_message_changed_in_its_own_batch(engine: &impl Engine) {
    let store = engine.open();
    let written = store
        .write_batch(vec![
            message("r", "alice", "m1", "first"),
            edit(1, "alice", "second"),
            message("r", "alice", "m1", "resent"),
            delete(1, "alice"),
            edit(1, "alice", "too late"),
        ])
        .unwrap();
    assert_eq!(stored_seq(&written[0]), 1);
    let Written::Changed(edited) = &written[1] else {
        panic!("{:?}", written[1]);
    };
    assert_eq!((edited.content.as_str(), edited.revision), ("second", 1));
    assert_eq!(written[2], Written::Duplicate(edited.clone()));
    let Written::Changed(deleted) = &written[3] else {
        panic!("{:?}", written[3]);
    };
    assert_eq!((deleted.deleted, deleted.revision), (true, 2));
    assert_eq!(written[4], Written::Refused(ChangeRefused::Deleted));
    drop(store);
    let store = engine.open();
    let page = changes(&store, 0, 10);
    assert_eq!(page.messages, std::slice::from_ref(deleted));
    assert_eq!(page.revision, 2);
}
