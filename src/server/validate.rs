//! Checks on what clients send, as pure functions. Each error message names
//! the field and the rule, since it goes straight back to a developer.

use crate::proto::chat::{
    ChatMessage, DeleteMessage, EditMessage, GetChatHistoryRequest, JoinRoom,
};

/// Longest room, user or message id, in bytes: ids are keys, not content.
pub const MAX_ID_BYTES: usize = 128;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// History page size when the request says 0.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;
/// Largest history page, whatever the request says.
pub const MAX_HISTORY_LIMIT: usize = 500;
/// Directory page size when the request says 0.
pub const DEFAULT_ROOMS_LIMIT: usize = 50;
/// Largest directory page: each room on it costs a lookup in the hub.
pub const MAX_ROOMS_LIMIT: usize = 200;

/// Why a request was refused (becomes `INVALID_ARGUMENT`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn id(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid(format!("{field} is required")));
    }
    optional_id(field, value)
}

fn optional_id(field: &str, value: &str) -> Result<(), Invalid> {
    if value.len() > MAX_ID_BYTES {
        return Err(Invalid(format!(
            "{field} is {} bytes long; the limit is {MAX_ID_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

pub fn user_id(value: &str) -> Result<(), Invalid> {
    id("user_id", value)
}

pub fn room_id(value: &str) -> Result<(), Invalid> {
    id("room_id", value)
}

pub fn chat_message(m: &ChatMessage, max_content_bytes: usize) -> Result<(), Invalid> {
    room_id(&m.room_id)?;
    id("sender_id", &m.sender_id)?;
    optional_id("id", &m.id)?;
    content(&m.content, max_content_bytes)
}

fn content(content: &str, max_content_bytes: usize) -> Result<(), Invalid> {
    if content.trim().is_empty() {
        return Err(Invalid("content is required".into()));
    }
    if content.len() > max_content_bytes {
        return Err(Invalid(format!(
            "content is {} bytes long; the limit is {max_content_bytes}",
            content.len()
        )));
    }
    Ok(())
}

fn message_ref(room: &str, seq: u64, sender_id: &str) -> Result<(), Invalid> {
    room_id(room)?;
    if seq == 0 {
        return Err(Invalid("seq is required (seqs start at 1)".into()));
    }
    id("sender_id", sender_id)
}

/// An edit names its message by (room, seq) and follows the rules of a
/// new message's content.
pub fn edit_message(e: &EditMessage, max_content_bytes: usize) -> Result<(), Invalid> {
    message_ref(&e.room_id, e.seq, &e.sender_id)?;
    content(&e.content, max_content_bytes)
}

pub fn delete_message(d: &DeleteMessage) -> Result<(), Invalid> {
    message_ref(&d.room_id, d.seq, &d.sender_id)
}

/// `changed_since` is a query of its own: a seq bound with it would have
/// no meaning.
pub fn history_request(r: &GetChatHistoryRequest) -> Result<(), Invalid> {
    room_id(&r.room_id)?;
    if r.changed_since.is_some() && (r.before_seq != 0 || r.after_seq.is_some()) {
        return Err(Invalid(
            "changed_since cannot be combined with before_seq or after_seq".into(),
        ));
    }
    Ok(())
}

/// A join names a room; the user is optional: without one the stream
/// listens (messages and presence) without being in anyone's presence list.
pub fn join_room(j: &JoinRoom) -> Result<(), Invalid> {
    room_id(&j.room_id)?;
    optional_id("user_id", &j.user_id)
}

/// A display name, trimmed: 1 to 64 characters, no control characters.
pub fn display_name(name: &str) -> Result<&str, Invalid> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Invalid("name is required".into()));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Invalid(format!(
            "name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Invalid("name must not contain control characters".into()));
    }
    Ok(name)
}

/// The page size a history request gets: 0 means the default, and no page
/// is larger than the cap.
pub fn history_limit(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_HISTORY_LIMIT,
        n => n.min(MAX_HISTORY_LIMIT),
    }
}

/// The page size a directory request gets, like [`history_limit`].
pub fn rooms_limit(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_ROOMS_LIMIT,
        n => n.min(MAX_ROOMS_LIMIT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(room: &str, sender: &str, content: &str) -> ChatMessage {
        ChatMessage {
            room_id: room.into(),
            sender_id: sender.into(),
            content: content.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_complete_message_passes() {
        assert_eq!(
            chat_message(&msg("room1", "client1", "Hello World !"), 4096),
            Ok(())
        );
    }

    #[test]
    fn each_missing_field_is_named() {
        let err = |m| chat_message(&m, 4096).unwrap_err().0;
        assert_eq!(err(msg("", "c", "x")), "room_id is required");
        assert_eq!(err(msg("r", "", "x")), "sender_id is required");
        assert_eq!(err(msg("r", "c", "")), "content is required");
        assert_eq!(err(msg("r", "c", "  \n")), "content is required");
    }

    #[test]
    fn content_over_the_limit_is_refused_with_both_sizes() {
        assert_eq!(chat_message(&msg("r", "c", &"a".repeat(10)), 10), Ok(()));
        assert_eq!(
            chat_message(&msg("r", "c", &"a".repeat(11)), 10)
                .unwrap_err()
                .0,
            "content is 11 bytes long; the limit is 10"
        );
    }

    #[test]
    fn long_ids_are_refused() {
        let long = "r".repeat(MAX_ID_BYTES + 1);
        assert!(room_id(&long).is_err());
        let mut m = msg("r", "c", "x");
        m.id = long;
        assert!(
            chat_message(&m, 4096)
                .unwrap_err()
                .0
                .starts_with("id is 129 bytes")
        );
    }

    #[test]
    fn a_join_needs_a_room_but_not_a_user() {
        let join = |room: &str, user: &str| {
            join_room(&JoinRoom {
                room_id: room.into(),
                user_id: user.into(),
            })
        };
        assert_eq!(join("room1", "client2"), Ok(()));
        assert_eq!(join("room1", ""), Ok(()));
        assert_eq!(join("", "client2").unwrap_err().0, "room_id is required");
        assert!(join("room1", &"u".repeat(MAX_ID_BYTES + 1)).is_err());
    }

    #[test]
    fn names_are_trimmed_and_checked() {
        assert_eq!(display_name("  Ada "), Ok("Ada"));
        assert!(display_name("   ").is_err());
        assert!(display_name("a\u{7}b").is_err());
        assert!(display_name(&"é".repeat(64)).is_ok());
        assert!(display_name(&"é".repeat(65)).is_err());
    }

    #[test]
    fn edits_and_deletions_name_a_message_and_follow_the_content_rules() {
        let edit = |room: &str, seq, sender: &str, content: &str| {
            edit_message(
                &EditMessage {
                    room_id: room.into(),
                    seq,
                    sender_id: sender.into(),
                    content: content.into(),
                },
                10,
            )
        };
        assert_eq!(edit("r", 1, "ada", "fixed"), Ok(()));
        assert_eq!(
            edit("r", 0, "ada", "x").unwrap_err().0,
            "seq is required (seqs start at 1)"
        );
        assert_eq!(
            edit("", 1, "ada", "x").unwrap_err().0,
            "room_id is required"
        );
        assert_eq!(
            edit("r", 1, "", "x").unwrap_err().0,
            "sender_id is required"
        );
        assert_eq!(
            edit("r", 1, "ada", " ").unwrap_err().0,
            "content is required"
        );
        assert_eq!(
            edit("r", 1, "ada", &"a".repeat(11)).unwrap_err().0,
            "content is 11 bytes long; the limit is 10"
        );
        let delete = |seq| {
            delete_message(&DeleteMessage {
                room_id: "r".into(),
                seq,
                sender_id: "ada".into(),
            })
        };
        assert_eq!(delete(3), Ok(()));
        assert!(delete(0).is_err());
    }

    #[test]
    fn changed_since_stands_alone() {
        let request = |before_seq, after_seq, changed_since| GetChatHistoryRequest {
            room_id: "r".into(),
            limit: 0,
            before_seq,
            after_seq,
            changed_since,
        };
        assert_eq!(history_request(&request(0, None, Some(3))), Ok(()));
        assert_eq!(history_request(&request(5, Some(1), None)), Ok(()));
        assert!(history_request(&request(5, None, Some(3))).is_err());
        assert!(history_request(&request(0, Some(0), Some(3))).is_err());
    }

    #[test]
    fn rooms_limit_defaults_and_caps() {
        assert_eq!(rooms_limit(0), 50);
        assert_eq!(rooms_limit(7), 7);
        assert_eq!(rooms_limit(10_000), 200);
    }

    #[test]
    fn history_limit_defaults_and_caps() {
        assert_eq!(history_limit(0), 50);
        assert_eq!(history_limit(1), 1);
        assert_eq!(history_limit(500), 500);
        assert_eq!(history_limit(100_000), 500);
    }
}
