//! One WebSocket connection: reads the browser's frames and dispatches them
//! (unary call, stream frame, or error frame); ends on close, on keepalive
//! timeout, on a frame it cannot read (oversize, invalid UTF-8, a protocol
//! violation), or on shutdown.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use tokio::sync::{Semaphore, watch};
use tonic::Code;
use tonic::metadata::MetadataMap;

use super::Context;
use super::admission::{Admitted, admit_user};
use super::gateway::REQUEST_ID;
use super::identity::{Gate, Identity};
use super::outbound::{Limits, ToClient, close_code, spawn_writer};
use super::rate::{self, FrameRate, Verdict};
use super::transcode::{Frame, error_json, pong_json, reply_json, status_json};
use super::upstream::StreamLink;

/// Serves one upgraded WebSocket until it ends.
#[tracing::instrument(name = "ws_session", skip_all, fields(peer = %peer))]
pub async fn serve(
    socket: WebSocket,
    ctx: Arc<Context>,
    peer: std::net::SocketAddr,
    mut identity: Identity,
    origin: Option<String>,
    // Its places in the connection counts, given back when it ends.
    mut admitted: Admitted,
) {
    let config = &ctx.config;
    let started = std::time::Instant::now();
    let origin = origin.as_deref().unwrap_or("-");
    let metadata = identity.metadata();
    let mut peer_code: Option<u16> = None;
    let (sink, mut stream) = socket.split();
    let limits = Limits {
        frames: config.outbound_queue,
        bytes: config.outbound_queue_bytes,
        write_timeout: config.write_timeout,
        ping_interval: config.ping_interval,
    };
    let (client, writer) = spawn_writer(sink, limits, ctx.metrics.clone());
    ctx.metrics.connected();
    let unary_slots = Arc::new(Semaphore::new(config.max_unary_in_flight));
    // Opened at the first stream frame: a page that only reads history costs
    // the service no stream.
    let mut link: Option<StreamLink> = None;
    // We ping every interval; a live peer answers well within two.
    let idle_limit = config.ping_interval * 2;
    let mut rate = FrameRate::new(config.max_frames_per_second, config.frame_burst);
    tracing::info!(
        sub = identity.sub().unwrap_or("-"),
        client_ip = %peer.ip(),
        origin,
        "connect"
    );
    if let Some(welcome) = identity.welcome() {
        client.send(welcome).await;
    }

    loop {
        let next = tokio::select! {
            _ = client.closed() => break,
            _ = ctx.shutdown.cancelled() => {
                client.close(close_code::AWAY, "the gateway is shutting down");
                break;
            }
            _ = until(identity.deadline()) => {
                let (code, reason) = identity.on_deadline();
                client.close(code, &reason);
                break;
            }
            next = tokio::time::timeout(idle_limit, stream.next()) => next,
        };
        let message = match next {
            Err(_) => {
                client.close(close_code::POLICY, "keepalive timeout: no pong received");
                break;
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                peer_code = Some(frame.map_or(1005, |f| f.code));
                client.finish();
                break;
            }
            Ok(None) => {
                client.finish();
                break;
            }
            Ok(Some(Err(e))) => {
                match read_failure(&e, config.max_frame_bytes) {
                    Some((code, reason)) => {
                        tracing::debug!(error = %e, code, "closing on a bad frame");
                        client.close(code, &reason);
                    }
                    None => {
                        tracing::debug!(error = %e, "websocket read failed");
                        client.finish();
                    }
                }
                break;
            }
            Ok(Some(Ok(message))) => message,
        };
        // Pings count (each costs a pong); pongs answer ours.
        if !matches!(message, Message::Pong(_)) {
            match rate.check() {
                Verdict::Pass => {}
                Verdict::Refuse => {
                    ctx.metrics.rate_limited.inc();
                    ctx.metrics.error_frame(Code::ResourceExhausted);
                    match &message {
                        Message::Text(text) => client.send(rate::refusal(Some(text))).await,
                        Message::Binary(_) => client.send(rate::refusal(None)).await,
                        _ => true,
                    };
                    continue;
                }
                Verdict::Close => {
                    ctx.metrics.rate_closes.inc();
                    client.close(close_code::POLICY, &rate::abuse_reason());
                    break;
                }
            }
        }
        match message {
            Message::Text(text) => match identity.on_text(text.as_str()) {
                Gate::Pass => {
                    let session = (&client, &unary_slots, &metadata);
                    dispatch(text.as_str(), &ctx, session, &mut link).await;
                }
                Gate::Answer(frame) => {
                    // A first-frame sign-in: now the user is known, count it.
                    if admitted.user.is_none()
                        && let Some(user) = identity.sub()
                    {
                        match admit_user(&ctx, user) {
                            Ok(place) => admitted.user = Some(place),
                            Err(_) => {
                                let reason = "too many connections for this user";
                                client.close(close_code::POLICY, reason);
                                break;
                            }
                        }
                    }
                    client.send(frame).await;
                }
                Gate::Close(code, reason) => {
                    client.close(code, &reason);
                    break;
                }
            },
            Message::Binary(_) => {
                ctx.metrics.frame_in(None);
                ctx.metrics.error_frame(Code::InvalidArgument);
                let error = error_json(
                    Code::InvalidArgument,
                    "binary frames are not supported; send JSON in text frames",
                    None,
                );
                client.send(error).await;
            }
            // Pongs only prove the peer is alive, which the read already did.
            _ => {}
        }
    }

    // Cancels the upstream stream now, so the service sees the user leave.
    drop(link);
    if writer.await.is_err() {
        tracing::error!("websocket writer task failed");
    }
    let (code, by) = match (client.close_code(), peer_code) {
        (Some(code), _) => (code, "gateway"),
        (None, Some(code)) => (code, "client"),
        // Gone without a close frame.
        (None, None) => (1006, "client"),
    };
    ctx.metrics.closed(client.close_code(), started.elapsed());
    tracing::info!(
        sub = identity.sub().unwrap_or("-"),
        client_ip = %peer.ip(),
        origin,
        duration_ms = started.elapsed().as_millis() as u64,
        close_code = code,
        closed_by = by,
        "disconnect"
    );
}

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn dispatch(
    text: &str,
    ctx: &Arc<Context>,
    (client, unary_slots, metadata): (
        &ToClient,
        &Arc<Semaphore>,
        &watch::Receiver<Arc<MetadataMap>>,
    ),
    link: &mut Option<StreamLink>,
) {
    let metrics = &ctx.metrics;
    match ctx.upstream.gateway().parse_frame(text) {
        Err(e) => {
            metrics.frame_in(None);
            metrics.error_frame(Code::InvalidArgument);
            client.send(e.to_json()).await;
        }
        Ok(Frame::Unary {
            method,
            request,
            request_id,
        }) => {
            metrics.frame_in(Some(&method.action));
            // Waiting for a slot stops reading this socket, which pushes back
            // on a client that floods us with calls.
            let Ok(slot) = unary_slots.clone().acquire_owned().await else {
                return;
            };
            let (method, upstream, client) = (method.clone(), ctx.upstream.clone(), client.clone());
            let metadata = metadata.borrow().clone();
            tokio::spawn(async move {
                let frame = match upstream.unary(&method, request, &metadata).await {
                    Ok(reply) => reply_json(&method, &reply, request_id.as_deref()),
                    Err(status) => {
                        upstream.metrics().error_frame(status.code());
                        status_json(&status, request_id.as_deref())
                    }
                };
                client.send(frame).await;
                drop(slot);
            });
        }
        Ok(Frame::Ping { request_id }) => {
            metrics.ping_in();
            client.send(pong_json(&request_id)).await;
        }
        Ok(Frame::Stream {
            action,
            message: frame,
        }) => {
            metrics.frame_in(Some(action));
            let link = link.get_or_insert_with(|| {
                StreamLink::open(ctx.upstream.clone(), client.clone(), metadata.clone())
            });
            if let Err(frame) = link.try_send(frame) {
                let request_id = frame.get_field_by_name(REQUEST_ID);
                let request_id = request_id.as_ref().and_then(|v| v.as_str());
                metrics.error_frame(Code::Unavailable);
                let error = error_json(
                    Code::Unavailable,
                    "the upstream stream is reconnecting and its queue is full; frame not sent",
                    request_id,
                );
                client.send(error).await;
            }
        }
    }
}

/// The close code and reason a failed read ends the session with (RFC 6455
/// section 7.4.1), or None if the peer is gone and there is no one to tell.
///
/// tungstenite leaves its connection writable after a bad frame (only a
/// close handshake or the end of the stream stops writes), so the close
/// frame does go out.
fn read_failure(e: &axum::Error, max_frame_bytes: usize) -> Option<(u16, String)> {
    use tungstenite::error::{Error, ProtocolError};
    match tungstenite_error(e)? {
        Error::Capacity(_) => Some((
            close_code::SIZE,
            format!("frame larger than {max_frame_bytes} bytes"),
        )),
        Error::Utf8(_) => Some((
            close_code::INVALID,
            "a text frame is not valid UTF-8".to_owned(),
        )),
        // The TCP connection ended without a close frame: the peer is gone.
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        // Unmasked frame, reserved opcode or bits, oversize or fragmented
        // control frame, continuation with nothing to continue...
        Error::Protocol(violation) => Some((
            close_code::PROTOCOL,
            format!("protocol violation: {violation}"),
        )),
        _ => None,
    }
}

/// The tungstenite error behind a failed read, if there is one.
fn tungstenite_error(e: &axum::Error) -> Option<&tungstenite::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(e) = err.downcast_ref::<tungstenite::Error>() {
            return Some(e);
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use tungstenite::error::{CapacityError, Error, ProtocolError};

    use super::*;

    fn code_for(e: Error) -> Option<u16> {
        read_failure(&axum::Error::new(e), 65536).map(|(code, _)| code)
    }

    #[test]
    fn each_read_failure_closes_with_its_rfc_6455_code() {
        let too_long = CapacityError::MessageTooLong {
            size: 70_000,
            max_size: 65_536,
        };
        assert_eq!(code_for(Error::Capacity(too_long)), Some(1009));
        assert_eq!(code_for(Error::Utf8("invalid utf-8".into())), Some(1007));
        for violation in [
            ProtocolError::UnmaskedFrameFromClient,
            ProtocolError::NonZeroReservedBits,
            ProtocolError::UnexpectedContinueFrame,
            ProtocolError::ControlFrameTooBig,
        ] {
            assert_eq!(code_for(Error::Protocol(violation)), Some(1002));
        }
    }

    #[test]
    fn a_peer_that_just_went_away_gets_no_close_frame() {
        let reset = Error::Protocol(ProtocolError::ResetWithoutClosingHandshake);
        assert_eq!(code_for(reset), None);
        assert_eq!(code_for(Error::ConnectionClosed), None);
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(code_for(Error::Io(io)), None);
    }

    #[test]
    fn the_size_limit_is_named_in_the_reason() {
        let too_long = CapacityError::MessageTooLong {
            size: 9,
            max_size: 8,
        };
        let failure = read_failure(&axum::Error::new(Error::Capacity(too_long)), 8);
        assert_eq!(failure, Some((1009, "frame larger than 8 bytes".into())));
    }
}
