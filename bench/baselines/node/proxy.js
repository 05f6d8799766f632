// The handout's WebSocket reverse proxy (proxy.js): one gRPC `Chat` stream per
// WebSocket connection, JSON frames relayed both ways, and the unary methods
// (GetUser, SetUserName, GetChatHistory) as request/reply actions.
//
// Usage: node proxy.js [--port N]   (or PORT; default 8080)
// Env: LISTEN_HOST (default 0.0.0.0), UPSTREAM (default localhost:50051)
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { WebSocketServer } = require('ws');

const PROTO_PATH = path.join(__dirname, '../../../proto/chat.proto');

const packageDefinition = protoLoader.loadSync(PROTO_PATH, {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const chatProto = grpc.loadPackageDefinition(packageDefinition).chat;

const { values: args } = parseArgs({ options: { port: { type: 'string' } } });
const port = Number(args.port ?? process.env.PORT ?? 8080);
const host = process.env.LISTEN_HOST || '0.0.0.0';
const upstream = process.env.UPSTREAM || 'localhost:50051';

// One client (one channel, one HTTP/2 connection) shared by every WebSocket.
const client = new chatProto.ChatService(upstream, grpc.credentials.createInsecure());

// Frame keys that go into the connection's Chat stream (ChatStream's oneof).
const STREAM_ACTIONS = new Set(['chat_message', 'join_room', 'leave_room']);
// Frame keys that are unary calls: action -> [client method, reply key].
const UNARY_ACTIONS = {
  get_user: ['getUser', 'user'],
  set_user_name: ['setUserName', 'user'],
  get_chat_history: ['getChatHistory', 'chat_history'],
};
// gRPC status number -> name, for error frames.
const STATUS_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));

function errorFrame(code, message, requestId) {
  const frame = { error: { code, message } };
  if (requestId !== undefined) frame.request_id = requestId;
  return JSON.stringify(frame);
}

function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const wss = new WebSocketServer({ host, port });

wss.on('connection', (ws) => {
  const call = client.Chat();

  // Upstream -> browser: {"<event>": {...}}.
  call.on('data', (data) => {
    ws.send(JSON.stringify({ [data.event]: data[data.event] }));
  });
  call.on('error', (err) => {
    // CANCELLED is our own doing (the WebSocket went away first).
    if (ws.readyState === ws.OPEN) ws.close(1011, `upstream: ${STATUS_NAMES[err.code] ?? err.code}`);
  });
  call.on('end', () => {
    if (ws.readyState === ws.OPEN) ws.close(1011, 'upstream stream ended');
  });

  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      ws.send(errorFrame('INVALID_ARGUMENT', 'binary frames are not supported'));
      return;
    }
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (e) {
      ws.send(errorFrame('INVALID_ARGUMENT', `invalid JSON: ${e.message}`));
      return;
    }
    if (!isObject(frame)) {
      ws.send(errorFrame('INVALID_ARGUMENT', 'a frame must be a JSON object'));
      return;
    }
    // One action key, plus an optional request_id echoed on unary answers.
    const requestId = typeof frame.request_id === 'string' ? frame.request_id : undefined;
    const keys = Object.keys(frame).filter((k) => k !== 'request_id');
    if (keys.length !== 1) {
      ws.send(errorFrame('INVALID_ARGUMENT', 'a frame must have exactly one action key', requestId));
      return;
    }
    const action = keys[0];
    const body = frame[action];
    if (!isObject(body)) {
      // protobufjs would throw on a non-object and the write would kill the stream.
      ws.send(errorFrame('INVALID_ARGUMENT', `"${action}" must be an object`, requestId));
      return;
    }
    if (STREAM_ACTIONS.has(action)) {
      call.write({ [action]: body });
      return;
    }
    const unary = UNARY_ACTIONS[action];
    if (unary === undefined) {
      ws.send(errorFrame('INVALID_ARGUMENT', `unknown action "${action}"`, requestId));
      return;
    }
    const [method, replyKey] = unary;
    client[method](body, (err, reply) => {
      if (ws.readyState !== ws.OPEN) return;
      if (err) {
        ws.send(errorFrame(STATUS_NAMES[err.code] ?? 'UNKNOWN', err.details || err.message, requestId));
        return;
      }
      const answer = { [replyKey]: reply };
      if (requestId !== undefined) answer.request_id = requestId;
      ws.send(JSON.stringify(answer));
    });
  });

  // Browser gone: half-close the stream; the server then ends it.
  ws.on('close', () => call.end());
  ws.on('error', () => {}); // 'close' follows
});

wss.on('listening', () => {
  const a = wss.address();
  console.log(`node proxy listening on ${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`);
});
wss.on('error', (err) => {
  console.error(`node proxy: ${err.message}`);
  process.exit(1);
});

function shutdown() {
  for (const ws of wss.clients) ws.close(1001, 'proxy shutting down');
  wss.close();
  client.close();
  // Clients that do not answer the close handshake are not waited for.
  setTimeout(() => process.exit(0), 200).unref();
}
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);
