// TcpChannel framing and back-pressure over a real loopback socket: frames split anywhere are
// delivered whole, nothing is delivered while paused, everything after resume, in order.
import test from 'ava';
import net from 'node:net';
import { TcpChannel } from '../../src/vrpc/tcp.js';

async function pair(): Promise<{ server: TcpChannel; client: net.Socket; close(): void }> {
  const srv = net.createServer();
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  const client = net.connect({ host: '127.0.0.1', port });
  const server = new TcpChannel(await accepted);
  return { server, client, close: () => { client.destroy(); server.close(); srv.close(); } };
}

function frame(b: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(b.length);
  return Buffer.concat([h, b]);
}

const until = async (ok: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!ok() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
};

test('frames split across writes arrive whole; paused delivers nothing; resume delivers the rest in order', async (t) => {
  const { server, client, close } = await pair();
  t.teardown(close);
  const got: number[] = [];
  server.onMessage((m) => {
    got.push(Buffer.from(m).readUInt32BE(0));
    if (got.length === 3) server.pause(); // pause from inside a delivery, mid-chunk
  });
  const frames = Buffer.concat(Array.from({ length: 10 }, (_, i) => {
    const body = Buffer.alloc(i === 5 ? 300_000 : 8, 0);
    body.writeUInt32BE(i, 0);
    return frame(body);
  }));
  // Dribble it in odd-sized pieces so headers and bodies straddle chunks.
  for (let at = 0; at < frames.length; at += 7777) client.write(frames.subarray(at, at + 7777));
  await until(() => got.length >= 3);
  await new Promise((r) => setTimeout(r, 100));
  t.deepEqual(got, [0, 1, 2], 'nothing delivered while paused');
  server.resume();
  await until(() => got.length >= 10);
  t.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

test('a frame over the limit closes the channel with E2BIG; the limit can be raised', async (t) => {
  const { server, client, close } = await pair();
  t.teardown(close);
  server.setMaxMessage(16);
  const got: number[] = [];
  server.onMessage((m) => got.push(m.length));
  const closed = new Promise<Error | undefined>((r) => server.onClose(r));
  client.write(frame(Buffer.alloc(16)));
  await until(() => got.length === 1);
  server.setMaxMessage(64);
  client.write(frame(Buffer.alloc(64)));
  await until(() => got.length === 2);
  client.write(frame(Buffer.alloc(65)));
  const err = await closed;
  t.deepEqual(got, [16, 64]);
  t.regex(String(err), /E2BIG/);
});
