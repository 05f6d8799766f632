//! The `chat.ChatService` RPCs. Their errors are [`ChatError`]s, which carry
//! the one mapping to gRPC status codes.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt, stream};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use super::directory;
use super::errors::ChatError;
use super::hub::{Hub, Outbox, StreamEnd, StreamId, Tag};
use super::identity::Caller;
use super::metrics::ServerMetrics;
use super::session::{Limits, Session};
use super::{now_us, validate};
use crate::metrics::Tracked;
use crate::proto::chat::{self, chat_service_server::ChatService};
use crate::storage::{ChangesQuery, HistoryQuery, Store, StoreError, Write, Writer};

impl From<validate::Invalid> for Status {
    fn from(e: validate::Invalid) -> Self {
        ChatError::from(e).into()
    }
}

pub struct ChatServiceImpl {
    pub(super) hub: Arc<Hub>,
    pub(super) writer: Writer<Tag>,
    pub(super) store: Arc<dyn Store>,
    pub(super) limits: Limits,
    pub(super) stream_buffer: usize,
    pub(super) shutdown: CancellationToken,
    pub(super) sessions: TaskTracker,
    pub(super) metrics: Arc<ServerMetrics>,
}

impl ChatServiceImpl {
    /// Counts a unary call's outcome.
    fn answered<T>(&self, method: &str, result: Result<T, Status>) -> Result<T, Status> {
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.request(method, code);
        result
    }

    /// Runs a blocking storage read off the async worker threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| {
                ChatError::Storage(StoreError::Internal(format!("storage task failed: {e}")))
            })?
            .map_err(|e| ChatError::from(e).into())
    }
}

type ChatResponseStream = Pin<Box<dyn Stream<Item = Result<chat::ChatStream, Status>> + Send>>;

#[tonic::async_trait]
impl ChatService for ChatServiceImpl {
    async fn get_user(
        &self,
        request: Request<chat::GetUserRequest>,
    ) -> Result<Response<chat::User>, Status> {
        let result = async {
            // Anyone authenticated may read any user: ids, names and presence
            // are what every member of a shared room sees anyway.
            Caller::of(&request)?;
            let user_id = request.into_inner().user_id;
            validate::user_id(&user_id)?;
            let online = self.hub.is_online_anywhere(&user_id).await;
            let lookup = user_id.clone();
            match self.read(move |store| store.get_user(&lookup)).await? {
                Some(record) => Ok(Response::new(chat::User::from_record(record, online))),
                // Joined a moment ago, its registration (and the name its
                // token gives it) not committed yet: no name rather than a
                // made-up one, so the client asks again.
                None if online => Ok(Response::new(chat::User {
                    name: String::new(),
                    id: user_id,
                    status: chat::UserStatus::Online as i32,
                    created_at: None,
                })),
                None => Err(ChatError::UserNotFound(user_id).into()),
            }
        }
        .await;
        self.answered("GetUser", result)
    }

    async fn set_user_name(
        &self,
        request: Request<chat::SetUserNameRequest>,
    ) -> Result<Response<chat::User>, Status> {
        let result = async {
            let caller = Caller::of(&request)?;
            let request = request.into_inner();
            // A user renames only itself.
            let user_id = caller.bind("user_id", &request.user_id)?;
            validate::user_id(&user_id)?;
            let name = validate::display_name(&request.name)?.to_owned();
            let (reply, done) = oneshot::channel();
            let write = Write::SetUserName {
                user_id,
                name,
                now_us: now_us(),
            };
            // Announced to the user's rooms by the hub once stored.
            self.writer
                .submit(write, Tag::Rename(reply))
                .await
                .map_err(ChatError::from)?;
            let record = done
                .await
                .map_err(|_| ChatError::ShuttingDown)?
                .map_err(ChatError::from)?;
            let online = self.hub.is_online_anywhere(&record.id).await;
            Ok(Response::new(chat::User::from_record(record, online)))
        }
        .await;
        self.answered("SetUserName", result)
    }

    type ChatStream = ChatResponseStream;

    async fn chat(
        &self,
        request: Request<Streaming<chat::ChatStream>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let caller = Caller::of(&request)?;
        let (tx, rx) = mpsc::channel(self.stream_buffer);
        let end = Arc::new(StreamEnd::default());
        let outbox = Outbox::new(StreamId::next(), tx, end.clone());
        let session = Session::new(
            self.hub.clone(),
            self.writer.clone(),
            outbox,
            caller,
            self.limits,
        );
        self.metrics.streams.inc();
        let open = Tracked::new(&self.metrics.streams_open);
        let run = session.run(request.into_inner(), self.shutdown.clone());
        self.sessions.spawn(async move {
            run.await;
            drop(open);
        });

        // The frames queued for the stream (all of them, or none once it is
        // aborted), then the status the server ends it with, if it does: a
        // client can tell a stream it was cut off from one that just ended.
        let aborted = end.clone();
        let metrics = self.metrics.clone();
        let outbound = ReceiverStream::new(rx)
            .map(move |frame| {
                if let Some(chat::chat_stream::Event::Error(error)) = &frame.event {
                    metrics.error_event(tonic::Code::from(error.code));
                }
                Ok(Arc::unwrap_or_clone(frame))
            })
            .take_until(async move { aborted.aborted().await })
            .chain(
                stream::once(async move { end.take_error() })
                    .filter_map(|error| async move { error.map(|e| Err(Status::from(e))) }),
            );
        Ok(Response::new(Box::pin(outbound)))
    }

    async fn get_chat_history(
        &self,
        request: Request<chat::GetChatHistoryRequest>,
    ) -> Result<Response<chat::ChatHistory>, Status> {
        let result = async {
            let caller = Caller::of(&request)?;
            let request = request.into_inner();
            validate::history_request(&request)?;
            caller.may_enter(&request.room_id)?;
            let room_id = request.room_id.clone();
            let limit = validate::history_limit(request.limit);
            let page = match request.changed_since {
                Some(after_revision) => {
                    let query = ChangesQuery {
                        room_id: request.room_id,
                        limit,
                        after_revision,
                    };
                    self.read(move |store| store.changes(&query)).await?
                }
                None => {
                    let query = HistoryQuery {
                        room_id: request.room_id,
                        limit,
                        before_seq: request.before_seq,
                        after_seq: request.after_seq,
                    };
                    self.read(move |store| store.history(&query)).await?
                }
            };
            Ok(Response::new(chat::ChatHistory {
                room_id,
                messages: page.messages.into_iter().map(Into::into).collect(),
                has_more: page.has_more,
                revision: page.revision,
            }))
        }
        .await;
        self.answered("GetChatHistory", result)
    }

    async fn list_rooms(
        &self,
        request: Request<chat::ListRoomsRequest>,
    ) -> Result<Response<chat::RoomList>, Status> {
        let result = async {
            let caller = Caller::of(&request)?;
            let request = request.into_inner();
            let limit = validate::rooms_limit(request.limit);
            let after = directory::parse_cursor(&request.cursor)?;
            let listing = self
                .read(move |store| {
                    directory::list(store, limit, after, |room| caller.may_enter(room).is_ok())
                })
                .await?;
            let names: Vec<String> = listing.rooms.iter().map(|r| r.room_id.clone()).collect();
            let members = self.hub.member_counts(&names).await;
            let rooms = listing
                .rooms
                .into_iter()
                .zip(members)
                .map(|(room, members)| chat::RoomInfo::from_record(room, members))
                .collect();
            Ok(Response::new(chat::RoomList {
                rooms,
                next_cursor: listing
                    .next
                    .as_ref()
                    .map(directory::format_cursor)
                    .unwrap_or_default(),
            }))
        }
        .await;
        self.answered("ListRooms", result)
    }

    async fn get_limits(
        &self,
        _request: Request<chat::GetLimitsRequest>,
    ) -> Result<Response<chat::Limits>, Status> {
        // The flags are validated at start; a limit past u32 says "no smaller limit than this".
        let wire = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let limits = chat::Limits {
            max_content_bytes: wire(self.limits.max_content_bytes),
            max_id_bytes: wire(validate::MAX_ID_BYTES),
            max_rooms_per_stream: wire(self.limits.max_rooms),
        };
        self.answered("GetLimits", Ok(Response::new(limits)))
    }
}
