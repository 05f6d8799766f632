// The handout's gRPC chat server (server.js), with its "travail à faire":
// messages are kept in memory per room and served by GetChatHistory.
//
// Usage: node server.js [HOST:PORT]   (or GRPC_ADDR; default 0.0.0.0:50051)
'use strict';

const path = require('node:path');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// The repository's proto, shared with wsgate (not a copy).
const PROTO_PATH = path.join(__dirname, '../../../proto/chat.proto');

const packageDefinition = protoLoader.loadSync(PROTO_PATH, {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const chatProto = grpc.loadPackageDefinition(packageDefinition).chat;

const addr = process.argv[2] || process.env.GRPC_ADDR || '0.0.0.0:50051';

// History page size: 0 means 50, more than 500 means 500 (see chat.proto).
const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 500;
const MAX_NAME_CHARS = 64;

/** room_id -> { members: Set<call>, messages: ChatMessage[] } (messages[i].seq === i + 1) */
const rooms = new Map();
/** user_id -> { id, name, created_at, streams: number of open Chat calls acting as the user } */
const users = new Map();

function getRoom(roomId) {
  let room = rooms.get(roomId);
  if (room === undefined) {
    room = { members: new Set(), messages: [] };
    rooms.set(roomId, room);
  }
  return room;
}

function now() {
  const ms = Date.now();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

function getOrCreateUser(userId) {
  let user = users.get(userId);
  if (user === undefined) {
    user = { id: userId, name: userId, created_at: now(), streams: 0 };
    users.set(userId, user);
  }
  return user;
}

function userReply(user) {
  return {
    id: user.id,
    name: user.name,
    status: user.streams > 0 ? 'ONLINE' : 'OFFLINE',
    created_at: user.created_at,
  };
}

// Bidirectional chat stream: one per WebSocket connection of the proxy.
function chat(call) {
  const joined = new Set(); // room ids this call is a member of
  const actingAs = new Set(); // user ids this call has joined or sent as

  function seenAs(userId) {
    if (userId === '' || actingAs.has(userId)) return;
    actingAs.add(userId);
    getOrCreateUser(userId).streams++;
  }

  function join(roomId) {
    if (joined.has(roomId)) return;
    joined.add(roomId);
    getRoom(roomId).members.add(call);
  }

  function leave(roomId) {
    if (!joined.delete(roomId)) return;
    const room = rooms.get(roomId);
    if (room !== undefined) room.members.delete(call);
  }

  function onMessage(msg) {
    const roomId = msg.room_id;
    if (roomId === '') return; // nowhere to store or deliver it
    seenAs(msg.sender_id);
    join(roomId); // sending to a room joins it
    const room = getRoom(roomId);
    const stored = {
      id: msg.id !== '' ? msg.id : crypto.randomUUID(),
      room_id: roomId,
      sender_id: msg.sender_id,
      content: msg.content,
      timestamp: now(),
      seq: room.messages.length + 1,
    };
    room.messages.push(stored);
    // One frame object for every member, the sender included. grpc-js buffers
    // in the call's Writable when HTTP/2 flow control holds a stream back
    // (write() then returns false); the buffer drains as the peer reads.
    const frame = { chat_message: stored };
    for (const member of room.members) member.write(frame);
  }

  call.on('data', (frame) => {
    switch (frame.event) {
      case 'chat_message':
        onMessage(frame.chat_message);
        break;
      case 'join_room':
        if (frame.join_room.room_id === '') break;
        seenAs(frame.join_room.user_id);
        join(frame.join_room.room_id);
        break;
      case 'leave_room':
        leave(frame.leave_room.room_id);
        break;
      default:
        break; // other events are not the baseline's business
    }
  });

  let closed = false;
  function cleanup() {
    if (closed) return;
    closed = true;
    for (const roomId of joined) leave(roomId);
    for (const userId of actingAs) users.get(userId).streams--;
  }
  // Client half-closed: stop delivering, finish our side (status OK).
  call.on('end', () => {
    cleanup();
    call.end();
  });
  call.on('cancelled', cleanup);
  call.on('error', cleanup);
  call.on('close', cleanup);
}

function getUser(call, callback) {
  const user = users.get(call.request.user_id);
  if (user === undefined) {
    callback({ code: grpc.status.NOT_FOUND, details: `user "${call.request.user_id}" not found` });
    return;
  }
  callback(null, userReply(user));
}

function setUserName(call, callback) {
  const { user_id: userId } = call.request;
  const name = call.request.name.trim();
  if (userId === '') {
    callback({ code: grpc.status.INVALID_ARGUMENT, details: 'user_id is empty' });
    return;
  }
  const chars = [...name].length;
  if (chars < 1 || chars > MAX_NAME_CHARS) {
    callback({ code: grpc.status.INVALID_ARGUMENT, details: `name must be 1 to ${MAX_NAME_CHARS} characters` });
    return;
  }
  const user = getOrCreateUser(userId);
  user.name = name;
  callback(null, userReply(user));
}

function getChatHistory(call, callback) {
  const req = call.request;
  if (req.room_id === '') {
    callback({ code: grpc.status.INVALID_ARGUMENT, details: 'room_id is empty' });
    return;
  }
  let limit = req.limit;
  if (limit === 0) limit = DEFAULT_LIMIT;
  if (limit > MAX_LIMIT) limit = MAX_LIMIT;
  // uint64 fields arrive as decimal strings (longs: String).
  const before = Number(req.before_seq);
  const after = Number(req.after_seq);

  const messages = rooms.get(req.room_id)?.messages ?? [];
  // seq s is messages[s - 1]; `upper` = number of messages with seq < before.
  const upper = before === 0 ? messages.length : Math.min(before - 1, messages.length);
  let page;
  let hasMore;
  if (after === 0) {
    // Backwards: the newest `limit` messages below `before`.
    const start = Math.max(0, upper - limit);
    page = messages.slice(start, upper);
    hasMore = start > 0;
  } else {
    // Forwards: the oldest `limit` messages above `after` (and below `before`).
    const start = Math.min(after, upper);
    const end = Math.min(start + limit, upper);
    page = messages.slice(start, end);
    hasMore = end < upper;
  }
  callback(null, { room_id: req.room_id, messages: page, has_more: hasMore });
}

const server = new grpc.Server();
server.addService(chatProto.ChatService.service, {
  GetUser: getUser,
  SetUserName: setUserName,
  Chat: chat,
  GetChatHistory: getChatHistory,
});

server.bindAsync(addr, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(`node chat server: cannot bind ${addr}: ${err.message}`);
    process.exit(1);
  }
  const host = addr.slice(0, addr.lastIndexOf(':'));
  console.log(`node chat server listening on ${host}:${port}`);
});

function shutdown() {
  // Open Chat streams never finish by themselves: cut them (RST_STREAM) and go.
  server.forceShutdown();
  process.exit(0);
}
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);
