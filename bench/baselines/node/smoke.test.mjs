// Smoke test of the baseline: server.js and proxy.js on loopback, port 0,
// two WebSocket clients, the handout's frame, then its history.
// Run: npm test  (node --test)
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import WebSocket from 'ws';

const here = (file) => fileURLToPath(new URL(file, import.meta.url));
const children = [];

// Starts `node script`, resolves with the HOST:PORT of its "listening" line.
async function start(script, args, env) {
  const child = spawn(process.execPath, [here(script), ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const lines = createInterface({ input: child.stdout });
  const exited = once(child, 'exit').then(([code]) => {
    throw new Error(`${script} exited (${code}) before listening`);
  });
  const listening = (async () => {
    for await (const line of lines) {
      const m = line.match(/listening on (\S+):(\d+)$/);
      if (m) return { child, port: Number(m[2]) };
    }
    throw new Error(`${script} closed stdout before listening`);
  })();
  return Promise.race([listening, exited]);
}

// A WebSocket client with a queue of received JSON frames.
async function connect(url) {
  const ws = new WebSocket(url);
  const frames = [];
  let waiter = null;
  ws.on('message', (data) => {
    frames.push(JSON.parse(data));
    if (waiter) waiter();
  });
  await once(ws, 'open');
  return {
    ws,
    send: (frame) => ws.send(JSON.stringify(frame)),
    // Resolves with (and removes) the first frame matching `pred`.
    async next(pred = () => true) {
      for (;;) {
        const i = frames.findIndex(pred);
        if (i >= 0) return frames.splice(i, 1)[0];
        await new Promise((resolve) => (waiter = resolve));
        waiter = null;
      }
    },
  };
}

// The sender's echo of a message in a room no one else is in: proves that
// every frame sent before it on this connection's stream was processed.
async function barrier(client, name) {
  client.send({ chat_message: { id: `sync-${name}`, room_id: `sync-${name}`, sender_id: name, content: 'sync' } });
  await client.next((f) => f.chat_message?.id === `sync-${name}`);
}

async function stop(child) {
  if (child.exitCode !== null) return child.exitCode;
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  return code;
}

after(async () => {
  for (const child of children) await stop(child);
});

test('two clients, the handout frame, then its history', { timeout: 20_000 }, async () => {
  const server = await start('./server.js', ['127.0.0.1:0'], {});
  const proxy = await start('./proxy.js', ['--port', '0'], {
    LISTEN_HOST: '127.0.0.1',
    UPSTREAM: `127.0.0.1:${server.port}`,
  });
  const url = `ws://127.0.0.1:${proxy.port}/`;
  const c1 = await connect(url);
  const c2 = await connect(url);

  c1.send({ join_room: { room_id: 'room1', user_id: 'client1' } });
  c2.send({ join_room: { room_id: 'room1', user_id: 'client2' } });
  await barrier(c1, 'client1');
  await barrier(c2, 'client2');

  // The handout's frame.
  c1.send({ chat_message: { id: 'msg1', room_id: 'room1', sender_id: 'client1', content: 'Hello World !' } });
  for (const client of [c1, c2]) {
    const { chat_message: msg } = await client.next((f) => f.chat_message?.room_id === 'room1');
    assert.equal(msg.id, 'msg1');
    assert.equal(msg.sender_id, 'client1');
    assert.equal(msg.content, 'Hello World !');
    assert.equal(msg.seq, '1');
    assert.match(msg.timestamp.seconds, /^\d+$/);
  }

  c2.send({ get_chat_history: { room_id: 'room1' } });
  const { chat_history: history } = await c2.next((f) => 'chat_history' in f);
  assert.equal(history.room_id, 'room1');
  assert.equal(history.has_more, false);
  assert.deepEqual(
    history.messages.map((m) => [m.seq, m.id, m.sender_id, m.content]),
    [['1', 'msg1', 'client1', 'Hello World !']],
  );

  c1.send({ get_user: { user_id: 'client2' } });
  const { user } = await c1.next((f) => 'user' in f);
  assert.deepEqual([user.id, user.status], ['client2', 'ONLINE']);

  // Per-frame problems answer an error and keep the connection.
  c1.ws.send('{not json');
  assert.equal((await c1.next((f) => 'error' in f)).error.code, 'INVALID_ARGUMENT');
  c1.send({ get_user: { user_id: 'nobody' } });
  assert.equal((await c1.next((f) => 'error' in f)).error.code, 'NOT_FOUND');
  c1.send({ fly: {} });
  assert.equal((await c1.next((f) => 'error' in f)).error.code, 'INVALID_ARGUMENT');

  c1.send({ chat_message: { id: 'msg2', room_id: 'room1', sender_id: 'client1', content: 'again' } });
  assert.equal((await c2.next((f) => f.chat_message?.id === 'msg2')).chat_message.seq, '2');

  c1.ws.close();
  c2.ws.close();
  await Promise.all([once(c1.ws, 'close'), once(c2.ws, 'close')]);
  assert.equal(await stop(proxy.child), 0);
  assert.equal(await stop(server.child), 0);
});
