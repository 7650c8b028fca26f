// TCPStore (lib/dist/store.ts over native/dist/store.cc): every call in one process, a counter and a
// barrier across forked worker processes, get waiting for a later set, timeouts and refused
// connections as DistError, clients sending garbage, and close() releasing the port.
import t from 'tap';
import { fork } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { TCPStore } from '../../lib/dist/store';
import { DistError, ValueError } from '../../lib/errors';
import { ensureBuilt, root } from '../helpers/cli';

const HOST = '127.0.0.1';

async function server(timeoutMs = 5000): Promise<TCPStore> {
  return TCPStore.create({ host: HOST, port: 0, isServer: true, timeoutMs });
}

/** A port nothing listens on now (a server picked it, then released it). */
async function freePort(): Promise<number> {
  const s = await server();
  const p = s.port;
  s.close();
  return p;
}

async function rejectsWithin(t: Tap, p: Promise<unknown>, ms: number, parts: string[]): Promise<void> {
  const t0 = Date.now();
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  const took = Date.now() - t0;
  t.ok(e instanceof DistError, `DistError (${String(e)})`);
  for (const part of parts) t.match(String((e as Error).message), part, `the message names ${part}`);
  t.ok(took < ms, `failed in ${took} ms (< ${ms})`);
}
type Tap = typeof t;

t.test('set, get, add, check, wait, deleteKey and numKeys in one process', async (t) => {
  const s = await server();
  t.ok(s.port > 0, `picked port ${s.port}`);
  const c = await TCPStore.create({ host: HOST, port: s.port, isServer: false, timeoutMs: 5000 });
  s.set('a', 'hello');
  t.equal(Buffer.from(await c.get('a')).toString(), 'hello');
  const bin = new Uint8Array([0, 255, 1, 0, 7]);
  c.set('bin', bin);
  t.same([...(await s.get('bin'))], [...bin], 'bytes round-trip, zeros included');
  c.set('empty', new Uint8Array(0));
  t.equal((await s.get('empty')).length, 0);
  t.equal(s.add('n', 5), 5);
  t.equal(c.add('n', -2), 3);
  t.equal(Buffer.from(await c.get('n')).toString(), '3', 'counters are stored as decimal text, as in torch');
  t.ok(c.check(['a', 'n']));
  t.notOk(c.check(['a', 'nope']));
  await c.wait(['a', 'bin']);
  t.equal(c.numKeys(), 4);
  t.ok(c.deleteKey('a'));
  t.notOk(c.deleteKey('a'));
  t.equal(s.numKeys(), 3);
  t.throws(() => c.add('bin', 1), DistError, 'add on a non-integer value');
  const big = new Uint8Array(8 << 20).map((_, i) => i & 0xff);
  c.set('big', big);
  t.ok(Buffer.from(await s.get('big')).equals(Buffer.from(big)), '8 MiB value');
  t.throws(() => c.set('x', new Uint8Array((64 << 20) + 1)), DistError, 'values are capped at 64 MiB');
  t.throws(() => c.set('k'.repeat(5000), 'v'), DistError, 'keys are capped at 4096 bytes');
  t.throws(() => c.set(3 as unknown as string, 'v'), ValueError);
  await t.rejects(c.get('a', -1), ValueError);
  c.close();
  t.throws(() => c.set('a', 'b'), DistError, 'a closed store throws');
  s.close();
  s.close();
});

t.test('get waits for a later set without blocking the event loop', async (t) => {
  const s = await server();
  const c = await TCPStore.create({ host: HOST, port: s.port, isServer: false, timeoutMs: 5000 });
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  const pending = c.get('late', 3000);
  const pendingWait = c.wait(['late', 'later'], 3000);
  setTimeout(() => s.set('late', 'here'), 200);
  setTimeout(() => s.set('later', 'too'), 300);
  t.equal(Buffer.from(await pending).toString(), 'here');
  await pendingWait;
  clearInterval(timer);
  t.ok(ticks >= 10, `the event loop ran ${ticks} timer ticks meanwhile`);
  c.close();
  s.close();
});

t.test('timeouts are DistErrors naming op and key', async (t) => {
  const s = await server();
  await rejectsWithin(t, s.get('missing-key', 300), 1300, ['TCPStore.get', 'missing-key', `${HOST}:${s.port}`, 'timed out']);
  await rejectsWithin(t, s.wait(['k1', 'k2'], 300), 1300, ['TCPStore.wait', 'k1', 'k2']);
  s.set('after', 'ok');
  t.equal(Buffer.from(await s.get('after', 300)).toString(), 'ok', 'the store serves after timeouts');
  s.close();
});

t.test('connecting where no server listens fails within the timeout', async (t) => {
  const port = await freePort();
  await rejectsWithin(t, TCPStore.create({ host: HOST, port, isServer: false, timeoutMs: 500 }), 1500, [
    'TCPStore.connect',
    `${HOST}:${port}`,
    'could not connect',
  ]);
});

t.test('a client started before the server connects once it listens; close() releases the port', async (t) => {
  const port = await freePort();
  const early = TCPStore.create({ host: HOST, port, isServer: false, timeoutMs: 5000 });
  await new Promise((r) => setTimeout(r, 400));
  const s = await TCPStore.create({ host: HOST, port, isServer: true, timeoutMs: 5000 });
  const c = await early;
  c.set('k', 'v');
  t.equal(Buffer.from(await s.get('k')).toString(), 'v');
  s.close();
  t.throws(() => c.set('k2', 'v'), DistError, "a client of a closed server gets DistError");
  c.close();
  const again = await TCPStore.create({ host: HOST, port, isServer: true, timeoutMs: 5000 });
  t.equal(again.port, port, 'the port is free again after close()');
  t.equal(again.numKeys(), 0);
  again.close();
});

t.test('garbage clients do not crash the server, which keeps serving others', async (t) => {
  const s = await server();
  const good = await TCPStore.create({ host: HOST, port: s.port, isServer: false, timeoutMs: 5000 });
  const pending = good.get('after-garbage', 5000);
  const payloads: Buffer[] = [
    Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]), // a 4 GiB length prefix
    Buffer.from([0, 0, 0, 0]), // an empty frame
    Buffer.from([10, 0, 0, 0, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // an unknown op
    Buffer.from([9, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]), // set with a 2 GiB key in a 9-byte frame
    Buffer.from([9, 0, 0, 0, 2, 1, 0, 0, 0, 0x61, 0, 0, 0]), // get with its timeout cut short
    Buffer.from([13, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]), // wait for 4 billion keys
    Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) & 0xff)), // noise
  ];
  const closed = payloads.map(
    (p) =>
      new Promise<boolean>((resolve) => {
        const sock = net.connect(s.port, HOST, () => sock.write(p));
        sock.on('error', () => resolve(true));
        sock.on('close', () => resolve(true));
        setTimeout(() => {
          sock.destroy();
          resolve(false);
        }, 3000);
      }),
  );
  // A client that sends half a frame and stalls holds only its own connection.
  const staller = net.connect(s.port, HOST, () => staller.write(Buffer.from([100, 0, 0, 0, 1, 2])));
  staller.on('error', () => {});
  const results = await Promise.all(closed);
  t.same(results, payloads.map(() => true), 'the server closed every garbage connection');
  s.set('after-garbage', 'still here');
  t.equal(Buffer.from(await pending).toString(), 'still here', 'a parked get is answered');
  good.set('x', '1');
  t.equal(good.add('c', 2), 2);
  t.equal(s.numKeys(), 3);
  staller.destroy();
  good.close();
  s.close();
});

t.test('worker processes count with add() and meet at a wait() barrier', async (t) => {
  ensureBuilt();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-store-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const worker = path.join(dir, 'worker.js');
  fs.writeFileSync(
    worker,
    `const { TCPStore } = require(${JSON.stringify(path.join(root, 'dist', 'dist', 'store.js'))});
const [port, id, n] = process.argv.slice(2).map(Number);
(async () => {
  const s = await TCPStore.create({ host: '127.0.0.1', port, isServer: false, worldSize: n, timeoutMs: 20000 });
  const ticket = s.add('counter', 1);
  s.set('worker/' + id, String(ticket));
  if (s.add('arrived', 1) === n) s.set('go', '1');
  await s.wait(['go']);
  const all = s.check(Array.from({ length: n }, (_, i) => 'worker/' + i));
  process.send({ id, ticket, all }, () => { s.close(); process.exit(0); });
})().catch((e) => { process.send({ id, error: String(e) }, () => process.exit(1)); });
`,
  );
  const s = await server(20000);
  const n = 4;
  const results = await Promise.all(
    Array.from(
      { length: n },
      (_, id) =>
        new Promise<{ id: number; ticket?: number; all?: boolean; error?: string }>((resolve, reject) => {
          const child = fork(worker, [String(s.port), String(id), String(n)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
          let msg: { id: number; ticket?: number; all?: boolean; error?: string } | undefined;
          child.on('message', (m) => (msg = m as typeof msg));
          child.on('exit', (code) => (msg ? resolve(msg) : reject(new Error(`worker ${id} exited ${code} without a result`))));
        }),
    ),
  );
  t.same(results.filter((r) => r.error), [], 'no worker failed');
  t.same(results.map((r) => r.ticket).sort(), [1, 2, 3, 4], 'add() handed out each ticket once');
  t.ok(results.every((r) => r.all), "after the barrier every worker sees every worker's key");
  t.equal(Buffer.from(await s.get('counter')).toString(), String(n));
  t.equal(Buffer.from(await s.get('__kiln_store/joined')).toString(), String(n), 'create() counted worldSize joins');
  s.close();
});
