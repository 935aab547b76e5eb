// The history settings of ChatOptions (message cache size, local retention by count and by age)
// through the ArkTS API, the NAPI shim and the C ABI, against a real receipt-server, under Node:
// their type checks, and each setting in effect on a device that receives real messages.
//
// Needs: scripts/build-napi.sh (addon, target/napi/*.js, the receipt-server binary).
// Run: node --test tests/napi/
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startServer, serverBinary } = require('./helpers/server');
const { Device, napiDir } = require('./helpers/device');

const addon = path.join(napiDir, 'libreceipt_napi.node');
const ready = fs.existsSync(addon) && fs.existsSync(path.join(napiDir, 'index.js'));
const skip = !ready ? 'target/napi not built (scripts/build-napi.sh)'
  : !serverBinary() ? 'receipt-server not built (scripts/build-napi.sh)' : false;
const TEST_TIMEOUT = 120000;

const isChatError = (R, code) => (e) => e instanceof R.ChatError && e.errorCode === code && typeof e.description === 'string';
const hasMsg = (id) => (r) => Array.isArray(r.args[0]) && r.args[0].some((m) => m.msgId === id);
const received = (id) => (r) => r.listener === 'probe' && r.cb === 'onMessageReceived' && hasMsg(id)(r);

test('history options: defaults, and wrong types or ranges rejected with INVALID_PARAM (ArkTS and shim)', { skip }, () => {
  const R = require(napiDir);
  const o = new R.ChatOptions();
  assert.deepStrictEqual([o.getMessageCacheSize(), o.getMessageRetentionAge(), o.getMessageRetentionCount()], [2048, 0, 0]);
  o.setMessageCacheSize(3);
  o.setMessageRetentionAge(86400000);
  o.setMessageRetentionCount(100);
  assert.deepStrictEqual([o.getMessageCacheSize(), o.getMessageRetentionAge(), o.getMessageRetentionCount()], [3, 86400000, 100]);
  for (const bad of ['5', 0, -1, 1.5, NaN, 2 ** 32, null]) {
    assert.throws(() => o.setMessageCacheSize(bad), isChatError(R, 110), `setMessageCacheSize(${bad})`);
  }
  for (const bad of ['1000', -1, 0.5, Infinity, 2 ** 53, true]) {
    assert.throws(() => o.setMessageRetentionAge(bad), isChatError(R, 110), `setMessageRetentionAge(${bad})`);
  }
  for (const bad of ['10', -1, 2.5, 2 ** 32, undefined]) {
    assert.throws(() => o.setMessageRetentionCount(bad), isChatError(R, 110), `setMessageRetentionCount(${bad})`);
  }
  assert.deepStrictEqual([o.getMessageCacheSize(), o.getMessageRetentionAge(), o.getMessageRetentionCount()], [3, 86400000, 100],
    'a rejected value changes nothing');

  // The shim checks the same fields of init()'s options (a caller past the ArkTS layer).
  const native = require(addon);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'receipt-opts-'));
  try {
    const base = { requireDeliveryAck: false, requireReadAck: true, server: '', port: 0, dataDir };
    for (const [field, bad] of [['messageCacheSize', 'x'], ['messageCacheSize', 0], ['retentionMaxAgeMs', -5],
      ['retentionMaxAgeMs', 1.5], ['retentionMaxPerConversation', 2 ** 32], ['retentionMaxPerConversation', '3']]) {
      assert.throws(() => native.init({ ...base, [field]: bad }), (e) => e.code === 110 && e.description.includes(field),
        `init with ${field} = ${JSON.stringify(bad)}`);
    }
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

test('history options in effect: a tiny cache holds 2 messages, retention keeps the newest 5 (count) or only the unread (age 1 ms)',
  { skip, timeout: TEST_TIMEOUT }, async () => {
    const server = await startServer();
    const devices = [];
    try {
      const bob = await Device.start(server, 'bob');
      devices.push(bob);
      const alice = await Device.start(server, 'alice', { messageCacheSize: 2, messageRetentionCount: 5 });
      devices.push(alice);
      const carol = await Device.start(server, 'carol', { messageRetentionAge: 1 });
      devices.push(carol);

      // bob sends 12 to alice, then 4 to carol.
      const toAlice = await bob.run(`
        const ids = [];
        for (let i = 0; i < 12; i++) {
          const m = ctx.R.ChatMessage.createTextSendMessage('alice', 'a' + i);
          await ctx.cm().sendMessage(m);
          ids.push(m.getMsgId());
        }
        return ids;`, 60000);
      const toCarol = await bob.run(`
        const ids = [];
        for (let i = 0; i < 4; i++) {
          const m = ctx.R.ChatMessage.createTextSendMessage('carol', 'c' + i);
          await ctx.cm().sendMessage(m);
          ids.push(m.getMsgId());
        }
        return ids;`, 60000);
      await alice.waitFor(received(toAlice[11]), 'alice received the last one');
      await carol.waitFor(received(toCarol[3]), 'carol received the last one');

      // The cache: alice's client holds 2 messages in memory, bob's (default 2048) all 16 it sent.
      const cached = (d) => d.run(`return ctx.require(${JSON.stringify(addon)}).cachedMessageCount();`);
      assert.strictEqual(await cached(alice), 2, 'the tiny cache is the one in use');
      assert.strictEqual(await cached(bob), 16, 'the default cache keeps them all');
      // Still every message is there, read from the store.
      const page = (d, peer) => d.run(`
        const c = ctx.cm().getConversation(${JSON.stringify(peer)}, ctx.R.ConversationType.Chat, true);
        return await c.loadMessages('', 100);`);
      assert.strictEqual((await page(alice, 'bob')).length, 12);
      assert.strictEqual(await cached(alice), 2, 'a page does not fill the cache');

      // Retention drops only read messages: both read the conversation; carol then gets one more
      // from bob, which stays unread. Both restart (retention sweeps soon after a session starts,
      // in the background).
      for (const d of [alice, carol]) {
        await d.run("await ctx.cm().getConversation('bob', ctx.R.ConversationType.Chat, true).markAllMessagesAsRead();");
      }
      const unread = await bob.run(`
        const m = ctx.R.ChatMessage.createTextSendMessage('carol', 'still unread');
        await ctx.cm().sendMessage(m);
        return m.getMsgId();`);
      await carol.waitFor(received(unread), 'carol received the unread one');
      for (const [d, user] of [[alice, 'alice'], [carol, 'carol']]) {
        const token = JSON.stringify(server.token(user));
        await d.run(`await ctx.client.logout(); await ctx.client.login(${JSON.stringify(user)}, ${token});`);
      }
      const settle = async (d, want, what) => {
        let got = [];
        for (let i = 0; i < 100; i++) {
          got = await page(d, 'bob');
          if (got.length === want) return got;
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.fail(`${what}: ${got.length} messages held after 10 s, want ${want}`);
      };
      const kept = await settle(alice, 5, 'retention by count');
      assert.deepStrictEqual(kept.map((m) => m.msgId), toAlice.slice(7).reverse(), 'the newest 5 are kept');
      const keptByAge = await settle(carol, 1, 'retention by age');
      assert.strictEqual(keptByAge[0].msgId, unread, 'the read ones are over 1 ms old: gone; the unread one stays');
      assert.strictEqual(keptByAge[0].unread, true);
      assert.strictEqual(await alice.run("return ctx.cm().getConversation('bob', ctx.R.ConversationType.Chat, true).getUnreadMsgCount();"), 0);
      // bob's device keeps everything (no retention set).
      assert.strictEqual((await page(bob, 'alice')).length, 12);
    } finally {
      await Promise.all(devices.map((d) => d.close()));
      await server.stop();
    }
  });
