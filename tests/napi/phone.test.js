// Ready for a phone (issue 14), through every layer (ArkTS -> shim -> C ABI -> Rust) against a
// real receipt-server under Node: an offline start with the server down then up, the token's
// will-expire / expired / renew callbacks, connected / disconnected as a TCP proxy in this test
// cuts the network, one flow over TLS (a throwaway CA made with openssl, helpers/server.js), and
// the logs.
//
// Needs: scripts/build-napi.sh. Run: node --test tests/napi/phone.test.js
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { startServer, serverBinary, makeTestCa, runNode } = require('./helpers/server');
const { Device, napiDir } = require('./helpers/device');

const ready = fs.existsSync(path.join(napiDir, 'libreceipt_napi.node')) && fs.existsSync(path.join(napiDir, 'index.js'));
const skip = !ready ? 'target/napi not built (scripts/build-napi.sh)'
  : !serverBinary() ? 'receipt-server not built (scripts/build-napi.sh)' : false;
const TEST_TIMEOUT = 90000;

const isCb = (listener, cb, pred = () => true) => (r) => r.listener === listener && r.cb === cb && pred(r);

async function send(d, to, content) {
  return d.run(`
    const m = ctx.R.ChatMessage.createTextSendMessage(${JSON.stringify(to)}, ${JSON.stringify(content)});
    await ctx.cm().sendMessage(m);
    return m;`);
}

async function withServer(opts, fn) {
  const server = await startServer(opts);
  const devices = [];
  try {
    await fn(server, devices);
  } finally {
    await Promise.all(devices.map((d) => d.close()));
    await server.stop();
  }
}

test('offline start: the store opens with the server down, counts and messages read, the ack queues and goes once the server is up',
  { skip, timeout: TEST_TIMEOUT }, () => withServer({}, async (server, devices) => {
    const alice = await Device.start(server, 'alice');
    devices.push(alice);
    let bob = await Device.start(server, 'bob');
    const m = await send(alice, 'bob', 'read me offline');
    await bob.until("return ctx.cm().getConversation('alice').getUnreadMsgCount();", (n) => n === 1, 'bob unread 1');
    // The app is killed (no logout) and the network is gone.
    await bob.worker.terminate();
    await server.kill();

    bob = await Device.start(server, 'bob', { filesDir: bob.filesDir, login: false });
    devices.push(bob);
    const token = server.token('bob');
    // loginWithToken resolves at once: the store opened without the server.
    await bob.run(`await ctx.client.loginWithToken('bob', ${JSON.stringify(token)});`, 10000);
    const opened = await bob.waitFor(isCb('connection', 'onDatabaseOpened'), 'onDatabaseOpened');
    assert.deepStrictEqual(opened.args, ['bob']);
    assert.deepStrictEqual(await bob.run('return [ctx.client.isLoggedIn(), ctx.client.isDatabaseOpened(), ctx.client.isConnected()];'),
      [true, true, false]);
    assert.strictEqual(await bob.run("return ctx.cm().getConversation('alice').getUnreadMsgCount();"), 1);
    // The ack queues (its promise settles when the server confirms it).
    await bob.run(`ctx.state.ack = ctx.cm().ackMessageRead(${JSON.stringify(m.msgId)}); return null;`);
    assert.strictEqual(await bob.run("return ctx.cm().getConversation('alice').getUnreadMsgCount();"), 0);
    assert.strictEqual(bob.calls('connection', 'onConnected').length, 0);

    await server.restart();
    await bob.waitFor(isCb('connection', 'onConnected'), 'bob onConnected after the server came back', 30000);
    await bob.run('await ctx.state.ack; return null;', 15000);
    // alice reconnects to the restarted server too; the receipt reaches her live or in her backlog.
    await alice.until(`return ctx.msg(${JSON.stringify(m.msgId)}).isReceiverRead();`, (v) => v === true, 'alice sees the read receipt', 30000);
    const sync = bob.calls('connection').map((r) => r.cb).filter((cb) => cb.startsWith('onOffline') || cb === 'onConnected');
    assert.deepStrictEqual(sync.slice(0, 3), ['onOfflineMessageSyncStart', 'onOfflineMessageSyncFinish', 'onConnected']);
  }));

test('token: onTokenWillExpire, renewToken on the live session, onTokenExpired without a renewal',
  { skip, timeout: TEST_TIMEOUT }, () => withServer({}, async (server, devices) => {
    const bob = await Device.start(server, 'bob', { token: server.token('bob', 3) });
    devices.push(bob);
    await bob.waitFor(isCb('connection', 'onTokenWillExpire'), 'onTokenWillExpire', 10000);
    await bob.run(`await ctx.client.renewToken(${JSON.stringify(server.token('bob', 3600))}); return null;`);
    assert.strictEqual(await bob.run('return ctx.client.isConnected();'), true);
    await new Promise((r) => setTimeout(r, 3500));
    assert.strictEqual(bob.calls('connection', 'onTokenExpired').length, 0, 'the renewed token did not expire');
    assert.strictEqual(bob.calls('connection', 'onDisconnected').length, 0, 'the renewal kept the session');
    // A token for another user is refused with 202; the session goes on.
    const refused = await bob.run(`try { await ctx.client.renewToken(${JSON.stringify(server.token('alice'))}); return 0; } catch (e) { return e.errorCode; }`);
    assert.strictEqual(refused, 202);

    // Renewing with an expired token (ttl 0: its expiry is now) is 108, a malformed one 104.
    const renewCodes = await bob.run(`
      const codes = [];
      for (const t of [${JSON.stringify(server.token('bob', 0))}, 'not-a-token']) {
        try { await ctx.client.renewToken(t); codes.push(0); } catch (e) { codes.push(e.errorCode); }
      }
      return codes;`);
    assert.deepStrictEqual(renewCodes, [108, 104]);

    const carol = await Device.start(server, 'carol', { token: server.token('carol', 2) });
    devices.push(carol);
    await carol.waitFor(isCb('connection', 'onTokenExpired'), 'onTokenExpired', 10000);
    assert.strictEqual(carol.calls('connection', 'onTokenWillExpire').length, 1);
  }));

test('loginWithToken with an expired token: rejected with 108 TOKEN_EXPIRED, onTokenExpired once, nobody logged in',
  { skip, timeout: TEST_TIMEOUT }, () => withServer({}, async (server, devices) => {
    const dave = await Device.start(server, 'dave', { login: false });
    devices.push(dave);
    const code = await dave.run(`try { await ctx.client.loginWithToken('dave', ${JSON.stringify(server.token('dave', 0))}); return 0; } catch (e) { return e.errorCode; }`, 15000);
    assert.strictEqual(code, 108);
    await dave.waitFor(isCb('connection', 'onTokenExpired'), 'onTokenExpired', 10000);
    assert.strictEqual(await dave.run('return ctx.client.getCurrentUser();'), '');
    // A fresh token logs in; the expired one told the app once.
    await dave.run(`await ctx.client.loginWithToken('dave', ${JSON.stringify(server.token('dave'))});`, 15000);
    assert.strictEqual(await dave.run('return ctx.client.getCurrentUser();'), 'dave');
    assert.strictEqual(dave.calls('connection', 'onTokenExpired').length, 1);
  }));

/** A TCP proxy on loopback whose links can be cut (and refused) at will. */
function startProxy(targetPort) {
  const sockets = new Set();
  let open = true;
  const srv = net.createServer((client) => {
    if (!open) { client.destroy(); return; }
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) { sockets.add(s); s.on('close', () => sockets.delete(s)); s.on('error', () => {}); }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve({
    port: srv.address().port,
    cut: () => { open = false; for (const s of sockets) s.destroy(); },
    heal: () => { open = true; },
    close: () => new Promise((r) => { open = false; for (const s of sockets) s.destroy(); srv.close(() => r()); }),
  })));
}

test('onDisconnected(300) / onConnected as a proxy cuts and heals the network', { skip, timeout: TEST_TIMEOUT },
  () => withServer({}, async (server, devices) => {
    const proxy = await startProxy(server.port);
    try {
      const bob = await Device.start(server, 'bob', { port: proxy.port });
      devices.push(bob);
      assert.strictEqual(await bob.run('return ctx.client.isConnected();'), true);
      proxy.cut();
      const down = await bob.waitFor(isCb('connection', 'onDisconnected'), 'onDisconnected', 10000);
      assert.strictEqual(down.args[0], 300);
      assert.strictEqual(await bob.run('return [ctx.client.isConnected(), ctx.client.isLoggedIn()];').then((v) => v.join()), 'false,true');
      proxy.heal();
      await bob.waitFor((r) => r.listener === 'connection' && r.cb === 'onConnected' && r.seq > down.seq, 'onConnected again', 15000);
      assert.strictEqual(await bob.run('return ctx.client.isConnected();'), true);
    } finally {
      await proxy.close();
    }
  }));

test('TLS: a message and its read receipt over TLS (the server requires it); logs reach stderr', { skip, timeout: TEST_TIMEOUT }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'receipt-tls-'));
  try {
    const ca = makeTestCa(dir);
    await withServer({ extraArgs: ['--tls-cert', ca.cert, '--tls-key', ca.key, '--require-tls', 'true'] }, async (server, devices) => {
      const alice = await Device.start(server, 'alice', { tlsCaPem: ca.ca });
      devices.push(alice);
      const bob = await Device.start(server, 'bob', { tlsCaPem: ca.ca });
      devices.push(bob);
      const m = await send(alice, 'bob', 'over tls');
      await bob.until(`return ctx.cm().getConversation('alice').getUnreadMsgCount();`, (n) => n === 1, 'bob unread 1');
      await bob.run(`await ctx.cm().ackMessageRead(${JSON.stringify(m.msgId)}); return null;`);
      await alice.until(`return ctx.msg(${JSON.stringify(m.msgId)}).isReceiverRead();`, (v) => v === true, 'alice sees the receipt');
      // Without the CA the same server is never reached: login rejects with 300.
      const stranger = await Device.start(server, 'carol', { login: false });
      devices.push(stranger);
      const code = await stranger.run(`try { await ctx.client.loginWithToken('carol', ${JSON.stringify(server.token('carol'))}); return 0; } catch (e) { return e.errorCode; }`);
      assert.ok(code === 110 || code === 300, `a plaintext login to a TLS-only server is refused (got ${code})`);
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('logs: setLogLevel routes the native records to stderr under Node, with no token in them', { skip, timeout: TEST_TIMEOUT }, () => {
  const script = `
    const R = require(${JSON.stringify(napiDir)});
    const fs = require('node:fs'); const os = require('node:os'); const path = require('node:path');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'receipt-log-'));
    const o = new R.ChatOptions(); o.setIMServer('127.0.0.1'); o.setImPort(1); o.setLogLevel(3);
    const c = R.ChatClient.getInstance(); c.init({ filesDir: dir }, o);
    c.login('loguser', '4000000000.secret-token-text').catch(() => {}).finally(() => { fs.rmSync(dir, { recursive: true, force: true }); });`;
  const out = runNode(script);
  assert.match(out.stderr, /receipt info receipt_client: store of loguser opened/);
  assert.ok(!out.stderr.includes('secret-token-text'), out.stderr);
});
