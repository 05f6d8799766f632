//! Everything the chat service refuses or fails at, and the one mapping of
//! each to a gRPC status code.
//!
//! A unary call answers with a [`Status`]; a problem with one frame of a
//! `Chat` stream is an `error` event on it (the stream goes on); a problem
//! with the stream itself ends it with a status. All three take their code
//! from [`ChatError::code`], which follows gRPC's status code guide
//! (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>): the code
//! tells a client what it can do about it, the message tells its developer.

use tonic::{Code, Status};

use super::validate::Invalid;
use crate::auth::AuthError;
use crate::proto::chat;
use crate::storage::{ChangeRefused, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// The client sent something the protocol does not allow.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A frame the server sends, sent to it.
    #[error("{0} frames are sent by the server, not to it")]
    ServerFrame(&'static str),
    /// A frame with no event set.
    #[error(
        "empty frame: set one of chat_message, join_room, leave_room, typing, \
         edit_message, delete_message"
    )]
    EmptyFrame,
    /// Typing in a room the stream has not joined.
    #[error("join room {0:?} before typing in it")]
    NotJoined(String),
    #[error("user {0:?} not found")]
    UserNotFound(String),
    /// A message the writer could not store.
    #[error("message not stored: {0}")]
    NotStored(StoreError),
    /// An edit or deletion the writer could not store.
    #[error("change not stored: {0}")]
    ChangeNotStored(StoreError),
    /// An edit or deletion of a (room, seq) that holds no message.
    #[error("room {room_id:?} has no message with seq {seq}")]
    MessageNotFound { room_id: String, seq: u64 },
    /// An edit or deletion of another user's message.
    #[error(
        "message {seq} of room {room_id:?} is not yours: only its sender may edit or delete it"
    )]
    NotYourMessage { room_id: String, seq: u64 },
    /// An edit of a deleted message.
    #[error("message {seq} of room {room_id:?} is deleted and can no longer be edited")]
    MessageDeleted { room_id: String, seq: u64 },
    /// Any other storage failure (a read, a user write).
    #[error(transparent)]
    Storage(StoreError),
    /// The server stops taking writes while it shuts down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The stream's outbound queue filled up: it is ended, not slowed down.
    #[error(
        "this stream fell too far behind and was closed; \
         reconnect and catch up with GetChatHistory(after_seq)"
    )]
    FellBehind,
    /// The stream carried bytes that are not a `ChatStream` message.
    #[error("a message on this stream is not a valid chat.ChatStream ({0}); the stream is closed")]
    Undecodable(String),
    /// No token, or one the verifier refuses (`--auth jwt`); also a stream
    /// whose token expired while it was open.
    #[error("{0}")]
    Unauthenticated(AuthError),
    /// A frame naming a user other than the token's.
    #[error("{field} must be empty or your own user id {you:?}: a token acts only as its user")]
    NotYou { field: &'static str, you: String },
    /// A room the token's `rooms` claim does not include.
    #[error("your token does not give access to room {0:?}")]
    RoomForbidden(String),
    /// One stream in more rooms than `--max-rooms-per-stream`.
    #[error("this stream is in {0} rooms, the most one stream may be in; leave one first")]
    TooManyRooms(usize),
    /// The stream carried a message over the server's size limit.
    #[error("a message on this stream is too large ({0}); the stream is closed")]
    TooLarge(String),
}

impl ChatError {
    /// The one mapping to gRPC status codes.
    pub fn code(&self) -> Code {
        match self {
            ChatError::Invalid(_)
            | ChatError::ServerFrame(_)
            | ChatError::EmptyFrame
            | ChatError::Undecodable(_) => Code::InvalidArgument,
            ChatError::NotJoined(_) | ChatError::MessageDeleted { .. } => Code::FailedPrecondition,
            ChatError::UserNotFound(_) | ChatError::MessageNotFound { .. } => Code::NotFound,
            ChatError::NotStored(e) | ChatError::ChangeNotStored(e) | ChatError::Storage(e) => {
                storage_code(e)
            }
            ChatError::ShuttingDown => Code::Unavailable,
            ChatError::FellBehind | ChatError::TooLarge(_) | ChatError::TooManyRooms(_) => {
                Code::ResourceExhausted
            }
            ChatError::Unauthenticated(_) => Code::Unauthenticated,
            ChatError::NotYou { .. }
            | ChatError::RoomForbidden(_)
            | ChatError::NotYourMessage { .. } => Code::PermissionDenied,
        }
    }

    /// Why the store refused to change message `seq` of `room_id`.
    pub fn refused_change(refused: ChangeRefused, room_id: String, seq: u64) -> ChatError {
        match refused {
            ChangeRefused::NotFound => ChatError::MessageNotFound { room_id, seq },
            ChangeRefused::NotSender => ChatError::NotYourMessage { room_id, seq },
            ChangeRefused::Deleted => ChatError::MessageDeleted { room_id, seq },
        }
    }

    /// Why a stream's inbound half failed, from tonic's decoding status, or
    /// `None` when it failed because the client went away (a reset, a broken
    /// connection): nobody is left to tell.
    pub fn from_inbound(status: &Status) -> Option<ChatError> {
        match status.code() {
            // tonic: a length prefix over the limit (OUT_OF_RANGE), or a
            // compressed message that inflates past it (RESOURCE_EXHAUSTED).
            Code::OutOfRange | Code::ResourceExhausted => {
                Some(ChatError::TooLarge(status.message().to_owned()))
            }
            // tonic-prost maps protobuf decode errors, and tonic a bad
            // compression flag, to INTERNAL: both are the sender's bytes.
            Code::Internal => Some(ChatError::Undecodable(status.message().to_owned())),
            _ => None,
        }
    }

    /// The `error` event answering a frame.
    pub fn to_event(&self) -> chat::Error {
        chat::Error {
            code: i32::from(self.code()),
            message: self.to_string(),
        }
    }
}

/// A storage failure, by what the client can do: wait for space, retry, or
/// report a bug.
fn storage_code(e: &StoreError) -> Code {
    match e {
        StoreError::Full(_) => Code::ResourceExhausted,
        // A database file deleted under the server: nothing is stored until
        // it restarts, and its health check says NOT_SERVING meanwhile.
        StoreError::Unavailable(_) | StoreError::File(_) | StoreError::Stopped => Code::Unavailable,
        StoreError::Corrupt(_) => Code::DataLoss,
        StoreError::Internal(_) => Code::Internal,
    }
}

impl From<ChatError> for Status {
    fn from(e: ChatError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Stopped => ChatError::ShuttingDown,
            e => ChatError::Storage(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_map_by_what_the_client_can_do() {
        let not_stored = |e| ChatError::NotStored(e).code();
        assert_eq!(
            not_stored(StoreError::Full("disk".into())),
            Code::ResourceExhausted
        );
        assert_eq!(
            not_stored(StoreError::Unavailable("locked".into())),
            Code::Unavailable
        );
        assert_eq!(not_stored(StoreError::Corrupt("x".into())), Code::DataLoss);
        assert_eq!(not_stored(StoreError::Internal("x".into())), Code::Internal);
        assert_eq!(
            ChatError::from(StoreError::Stopped).code(),
            Code::Unavailable
        );
    }

    #[test]
    fn refused_changes_map_to_not_found_permission_and_precondition() {
        let code = |refused| ChatError::refused_change(refused, "r".into(), 7).code();
        assert_eq!(code(ChangeRefused::NotFound), Code::NotFound);
        assert_eq!(code(ChangeRefused::NotSender), Code::PermissionDenied);
        assert_eq!(code(ChangeRefused::Deleted), Code::FailedPrecondition);
        let message = ChatError::refused_change(ChangeRefused::NotSender, "r".into(), 7);
        assert_eq!(
            message.to_string(),
            "message 7 of room \"r\" is not yours: only its sender may edit or delete it"
        );
    }

    #[test]
    fn an_event_carries_the_code_number_and_the_message() {
        let event = ChatError::NotJoined("r".into()).to_event();
        assert_eq!(event.code, chat::Code::FailedPrecondition as i32);
        assert_eq!(event.message, "join room \"r\" before typing in it");
    }

    #[test]
    fn inbound_failures_are_told_apart_from_a_client_going_away() {
        let too_large = Status::out_of_range("found 11000000 bytes, the limit is: 4194304 bytes");
        assert_eq!(
            ChatError::from_inbound(&too_large).map(|e| e.code()),
            Some(Code::ResourceExhausted)
        );
        let garbage = Status::internal("failed to decode Protobuf message: invalid wire type");
        let error = ChatError::from_inbound(&garbage).unwrap();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(error.to_string().contains("invalid wire type"), "{error}");
        assert_eq!(ChatError::from_inbound(&Status::cancelled("reset")), None);
        assert_eq!(ChatError::from_inbound(&Status::unknown("h2 error")), None);
    }
}
