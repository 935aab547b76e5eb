// History on demand through the ArkTS API (Conversation.loadMessages, ChatManager.getMessage)
// over the NAPI shim and the C ABI, against a real receipt-server, under Node. bob's client is
// logged out and in again before reading, so the engine reopens its store with nothing cached:
// every page and the ack below read their messages from the store by key.
//
// Needs: scripts/build-napi.sh (addon, target/napi/*.js, the receipt-server binary).
// Run: node --test tests/napi/
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { startServer, serverBinary } = require('./helpers/server');
const { Device, napiDir } = require('./helpers/device');

const ready = fs.existsSync(path.join(napiDir, 'libreceipt_napi.node')) && fs.existsSync(path.join(napiDir, 'index.js'));
const skip = !ready ? 'target/napi not built (scripts/build-napi.sh)'
  : !serverBinary() ? 'receipt-server not built (scripts/build-napi.sh)' : false;
const TEST_TIMEOUT = 120000;
const N = 45;

const hasMsg = (id) => (r) => Array.isArray(r.args[0]) && r.args[0].some((m) => m.msgId === id);
const isCb = (listener, cb, pred = () => true) => (r) => r.listener === listener && r.cb === cb && pred(r);

test('history: pages of a conversation newest first after a restart, and an ack of a message no longer cached',
  { skip, timeout: TEST_TIMEOUT }, async () => {
    const server = await startServer();
    const devices = [];
    try {
      const alice = await Device.start(server, 'alice');
      devices.push(alice);
      const bob = await Device.start(server, 'bob');
      devices.push(bob);

      // alice sends N messages, one after the other (ids ascending).
      const ids = await alice.run(`
        const ids = [];
        for (let i = 0; i < ${N}; i++) {
          const m = ctx.R.ChatMessage.createTextSendMessage('bob', 'history ' + i);
          await ctx.cm().sendMessage(m);
          ids.push(m.getMsgId());
        }
        return ids;`, 60000);
      assert.strictEqual(ids.length, N);
      await bob.waitFor(isCb('probe', 'onMessageReceived', hasMsg(ids[N - 1])), 'bob received the last one');

      // A restart of bob's session: the engine reopens its store with an empty message cache.
      const token = JSON.stringify(server.token('bob'));
      await bob.run(`await ctx.client.logout(); await ctx.client.login('bob', ${token});`);

      const page = (start, size) => bob.run(`
        const c = ctx.cm().getConversation('alice', ctx.R.ConversationType.Chat, true);
        return await c.loadMessages(${JSON.stringify(start)}, ${size});`);
      const p1 = await page('', 20);
      assert.deepStrictEqual(p1.map((m) => m.msgId), ids.slice(N - 20).reverse(), 'the 20 newest, newest first');
      assert.ok(p1.every((m) => m.unread && !m.receiverRead && m.direction === 1 && m.from === 'alice'));
      assert.strictEqual(p1[0].content, `history ${N - 1}`);
      const p2 = await page(p1[19].msgId, 20);
      assert.deepStrictEqual(p2.map((m) => m.msgId), ids.slice(N - 40, N - 20).reverse());
      const p3 = await page(p2[19].msgId, 20);
      assert.deepStrictEqual(p3.map((m) => m.msgId), ids.slice(0, N - 40).reverse(), 'the last page is short');
      assert.deepStrictEqual(await page(ids[0], 20), [], 'nothing older than the first message');

      // Ack the oldest message (read from the store, not from memory): alice hears it, and the
      // history and getMessage show it read, as does the unread count.
      await bob.run(`await ctx.cm().ackMessageRead(${JSON.stringify(ids[0])});`);
      await alice.waitFor(isCb('probe', 'onMessageRead', hasMsg(ids[0])), 'alice hears the read ack of the oldest');
      const [oldest] = await page(ids[1], 1);
      assert.strictEqual(oldest.msgId, ids[0]);
      assert.strictEqual(oldest.receiverRead, true);
      assert.strictEqual(oldest.unread, false);
      const got = await bob.run(`return ctx.cm().getMessage(${JSON.stringify(ids[0])});`);
      assert.strictEqual(got.receiverRead, true);
      assert.strictEqual(got.unread, false);
      assert.strictEqual(await bob.run("return ctx.cm().getConversation('alice', ctx.R.ConversationType.Chat, true).getUnreadMsgCount();"), N - 1);
      // The same object for the same message: loadMessages hands out the objects receipts update.
      assert.strictEqual(await bob.run(`
        const c = ctx.cm().getConversation('alice', ctx.R.ConversationType.Chat, true);
        const [a] = await c.loadMessages('', 1);
        return a === ctx.cm().getMessage(a.getMsgId());`), true);

      // Bad arguments reject with INVALID_PARAM (110); an unknown conversation is an empty page.
      for (const args of ["'', 0", "'', 401", "'', 1.5", "1, 20", "'x1', 20"]) {
        const res = await bob.run(`
          const c = ctx.cm().getConversation('alice', ctx.R.ConversationType.Chat, true);
          try { await c.loadMessages(${args}); return { threw: false }; } catch (e) { return { threw: true, code: e.errorCode }; }`);
        assert.ok(res.threw, `loadMessages(${args}) should reject`);
        assert.strictEqual(res.code, args === "'x1', 20" ? 500 : 110, `loadMessages(${args}): ${JSON.stringify(res)}`);
      }
      assert.deepStrictEqual(await bob.run(`
        return await ctx.cm().getConversation('nobody', ctx.R.ConversationType.Chat, true).loadMessages('', 20);`), []);
    } finally {
      await Promise.all(devices.map((d) => d.close()));
      await server.stop();
    }
  });
