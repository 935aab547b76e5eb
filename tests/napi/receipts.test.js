// The ArkTS API (compiled to CommonJS in target/napi) over the NAPI shim (target/napi/
// libreceipt_napi.node) over the Rust C ABI, against a real receipt-server, under Node.
// One simulated device per worker_threads worker (helpers/device-worker.js): the API is a
// per-process singleton, as on HarmonyOS. The seed's code blocks are tests/napi/SeedSnippets.ets
// (the same file the ArkTS lint checks), transpiled as is; only setup and observation are ours.
//
// Needs: scripts/build-napi.sh (addon, target/napi/*.js, target/release/receipt-server).
// Run: node --test tests/napi/
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { napiDir } = require('./helpers/device');
const { skip, scenario: sharedScenario, hasMsg, isCb } = require('./helpers/scenario');

const TEST_TIMEOUT = 90000;

/** A server and the devices of one test; every listener call was made on the JS thread. */
const scenario = (fn) => sharedScenario(fn, assertListenersOnJsThread);

/** Every listener callback ran on the device's own JS thread (worker), inside its event loop. */
function assertListenersOnJsThread(d) {
  for (const r of d.records) {
    assert.strictEqual(r.threadId, d.threadId, `${d.name}: ${r.listener}.${r.cb} ran on thread ${r.threadId}`);
    assert.ok(r.marker && !r.isMainThread, `${d.name}: ${r.listener}.${r.cb} did not see the worker's thread-local marker`);
  }
}


async function send(d, to, content, { group = false } = {}) {
  return d.run(`
    const m = ctx.R.ChatMessage.createTextSendMessage(${JSON.stringify(to)}, ${JSON.stringify(content)});
    ${group ? 'm.setChatType(ctx.R.ChatType.GroupChat);' : ''}
    await ctx.cm().sendMessage(m);
    return m;`);
}

async function expectChatError(d, code, body) {
  const res = await d.run(`
    try {
      ${body}
    } catch (e) {
      return { threw: true, isChatError: e instanceof ctx.R.ChatError, code: e.code, description: e.description };
    }
    return { threw: false };`);
  assert.ok(res.threw, `expected ChatError ${code}, nothing thrown: ${body}`);
  assert.ok(res.isChatError, `expected a ChatError: ${JSON.stringify(res)}`);
  assert.strictEqual(res.code, code, `expected code ${code}: ${JSON.stringify(res)}`);
  assert.ok(typeof res.description === 'string' && res.description.length > 0);
  return res;
}

test('seed section 3: delivery receipts (onMessageReceived + onMessageDelivered); a removed listener hears nothing',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ start }) => {
    const alice = await start('alice', { requireDeliveryAck: true });
    const bob = await start('bob');

    // The seed's option line as written sets the default (false).
    assert.strictEqual(await bob.run('const o = new ctx.R.ChatOptions(); ctx.seed.deliveryOption(o); return o.getRequireDeliveryAck();'), false);

    // The seed's block as written: add the listener, and remove it. Removed: it hears nothing.
    for (const d of [alice, bob]) {
      await d.run("ctx.tagged('seed.delivery', () => ctx.seed.deliveryListener());");
    }
    const m0 = await send(alice, 'bob', 'before');
    await bob.waitFor(isCb('probe', 'onMessageReceived', hasMsg(m0.msgId)), 'probe hears m0');
    await alice.waitFor(isCb('probe', 'onMessageDelivered', hasMsg(m0.msgId)), 'probe hears m0 delivered');
    assert.strictEqual(bob.calls('seed.delivery').length, 0, 'removed seed listener heard something');
    assert.strictEqual(alice.calls('seed.delivery').length, 0, 'removed seed listener heard something');

    // The block's listener, added (its first statement) and kept while needed.
    for (const d of [alice, bob]) {
      await d.run("ctx.cm().addMessageListener(ctx.state.listeners.get('seed.delivery'));");
    }
    const m1 = await send(alice, 'bob', 'hello bob');
    assert.strictEqual(m1.from, 'alice');
    assert.ok(/^\d+$/.test(m1.msgId), `server id: ${m1.msgId}`);
    const rec = await bob.waitFor(isCb('seed.delivery', 'onMessageReceived', hasMsg(m1.msgId)), 'bob onMessageReceived');
    const got = rec.args[0].find((m) => m.msgId === m1.msgId);
    assert.strictEqual(got.content, 'hello bob');
    assert.strictEqual(got.from, 'alice');
    assert.strictEqual(got.direction, 1); // RECEIVE
    await alice.waitFor(isCb('seed.delivery', 'onMessageDelivered', hasMsg(m1.msgId)), 'alice onMessageDelivered');
    // The very object alice sent is updated in place.
    assert.strictEqual(await alice.run(`return ctx.msg(${JSON.stringify(m1.msgId)}).isDelivered();`), true);

    // The block's last statement: remove it. Later messages reach the probe only.
    const before = bob.calls('seed.delivery').length;
    await bob.run("ctx.cm().removeMessageListener(ctx.state.listeners.get('seed.delivery'));");
    const m2 = await send(alice, 'bob', 'after removal');
    await bob.waitFor(isCb('probe', 'onMessageReceived', hasMsg(m2.msgId)), 'probe hears m2');
    await alice.waitFor(isCb('seed.delivery', 'onMessageDelivered', hasMsg(m2.msgId)), 'alice delivered m2');
    assert.strictEqual(bob.calls('seed.delivery').length, before, 'a removed listener was called');
  }));

test('seed section 4: message read acks (sendReadAck in onMessageReceived, ackMessageRead(messageId)) -> onMessageRead',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ start }) => {
    const alice = await start('alice');
    const bob = await start('bob');
    assert.strictEqual(await bob.run('const o = new ctx.R.ChatOptions(); ctx.seed.readOption(o); return o.getRequireReadAck();'), true);
    await bob.run("ctx.tagged('seed.readAckOnReceive', () => ctx.seed.readAckOnReceive());");
    await alice.run("ctx.tagged('seed.readListener', () => ctx.seed.readListener());");

    const m1 = await send(alice, 'bob', 'read me');
    await bob.waitFor(isCb('seed.readAckOnReceive', 'onMessageReceived', hasMsg(m1.msgId)), 'bob received');
    // sendReadAck ran ackMessageRead(message.getFrom(), message.getMsgId()), and it succeeded.
    const ack = await bob.waitFor(isCb('call', 'ackMessageRead:ok', (r) => r.args[2] === m1.msgId), 'bob ack accepted');
    assert.strictEqual(ack.args[1], 'alice');
    const read = await alice.waitFor(isCb('seed.readListener', 'onMessageRead', hasMsg(m1.msgId)), 'alice onMessageRead');
    assert.ok(read.args[0].find((m) => m.msgId === m1.msgId).receiverRead);
    assert.strictEqual(await alice.run(`return ctx.msg(${JSON.stringify(m1.msgId)}).isReceiverRead();`), true);
    assert.deepStrictEqual(await bob.run(`const m = ctx.msg(${JSON.stringify(m1.msgId)}); return [m.isReceiverRead(), m.isUnread()];`), [true, false]);

    // The other form of the seed: ackMessageRead(messageId), when the chat page opens.
    await bob.run("ctx.cm().removeMessageListener(ctx.state.listeners.get('seed.readAckOnReceive'));");
    const m2 = await send(alice, 'bob', 'read me later');
    await bob.waitFor(isCb('probe', 'onMessageReceived', hasMsg(m2.msgId)), 'bob received m2');
    assert.strictEqual(bob.calls('call', 'ackMessageRead:ok').filter((r) => r.args[2] === m2.msgId).length, 0);
    await bob.run(`ctx.seed.messageAck(${JSON.stringify(m2.msgId)});`);
    await alice.waitFor(isCb('seed.readListener', 'onMessageRead', hasMsg(m2.msgId)), 'alice onMessageRead m2');
    // Acks are idempotent: the same ack again is accepted and nothing more is forwarded. (m3 is a
    // fence: events arrive in order, so a second read of m2 would have come before m3's.)
    await bob.run(`await ctx.cm().ackMessageRead('alice', ${JSON.stringify(m2.msgId)});`);
    const m3 = await send(alice, 'bob', 'fence');
    await bob.waitFor(isCb('probe', 'onMessageReceived', hasMsg(m3.msgId)), 'bob received m3');
    await bob.run(`await ctx.cm().ackMessageRead(${JSON.stringify(m3.msgId)});`);
    await alice.waitFor(isCb('seed.readListener', 'onMessageRead', hasMsg(m3.msgId)), 'alice onMessageRead m3');
    assert.strictEqual(alice.calls('seed.readListener', 'onMessageRead').filter(hasMsg(m2.msgId)).length, 1, 'm2 read twice');
  }));

test('seed section 4: conversation ack -> onConversationRead on the peer and on the acker\'s other device; unread 0',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ start }) => {
    const carol = await start('carol');
    const dave1 = await start('dave', { name: 'dave#1' });
    const dave2 = await start('dave', { name: 'dave#2' });
    await carol.run("ctx.tagged('seed.conversationListener', () => ctx.seed.conversationListener());");
    await dave2.run("ctx.tagged('seed.conversationListener', () => ctx.seed.conversationListener());");

    const a = await send(carol, 'dave', 'one');
    const b = await send(carol, 'dave', 'two');
    for (const d of [dave1, dave2]) {
      for (const m of [a, b]) await d.waitFor(isCb('probe', 'onMessageReceived', hasMsg(m.msgId)), `${d.name} got ${m.content}`);
      await d.until("return ctx.cm().getConversation('carol').getUnreadMsgCount();", (n) => n === 2, `${d.name} unread 2`);
    }

    // Receiver enters the chat page with unread messages: the seed's conversation ack, as written.
    await dave1.run("ctx.seed.conversationAck('carol');");
    const onPeer = await carol.waitFor(isCb('seed.conversationListener', 'onConversationRead'), 'carol onConversationRead');
    assert.deepStrictEqual(onPeer.args, ['dave', 'carol']);
    const onOther = await dave2.waitFor(isCb('seed.conversationListener', 'onConversationRead'), 'dave#2 onConversationRead');
    assert.deepStrictEqual(onOther.args, ['dave', 'carol']);
    // The acker's own device does not hear its own ack.
    assert.strictEqual(dave1.calls('probe', 'onConversationRead').length, 0);

    assert.deepStrictEqual(await carol.run(`return [ctx.msg(${JSON.stringify(a.msgId)}).isReceiverRead(), ctx.msg(${JSON.stringify(b.msgId)}).isReceiverRead()];`), [true, true]);
    for (const d of [dave1, dave2]) {
      await d.until("return ctx.cm().getConversation('carol').getUnreadMsgCount();", (n) => n === 0, `${d.name} unread 0`);
    }
    assert.deepStrictEqual(await dave2.run(`return ctx.msg(${JSON.stringify(a.msgId)}).isUnread();`), false);
  }));

test('seed section 5: group read acks: send with setIsNeedGroupAck, ack after marking read, onGroupMessageRead, groupAckCount, fetchGroupReadAcks paging',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ start }) => {
    const erin = await start('erin');
    const frank = await start('frank');
    const grace = await start('grace');
    const gid = await erin.run("return await ctx.client.groupManager().createGroup('team', ['frank', 'grace']);");
    assert.ok(typeof gid === 'string' && gid.length > 0, `group id ${gid}`);
    await erin.run("ctx.tagged('seed.groupListener', () => ctx.seed.groupListener());");

    // Step 1 as written, then sent.
    const sent = await erin.run(`
      ctx.seed.groupSend(${JSON.stringify(gid)}, 'group hello');
      const m = ctx.state.lastCreated;
      if (m.getChatType() !== ctx.R.ChatType.GroupChat || !m.isNeedGroupAck()) throw new Error('groupSend did not set the message up');
      await ctx.cm().sendMessage(m);
      return m;`);
    assert.strictEqual(sent.groupAckCount, 0);
    const id = JSON.stringify(sent.msgId);

    for (const [d, ext] of [[frank, 'ext-frank'], [grace, 'ext-grace']]) {
      const r = await d.waitFor(isCb('probe', 'onMessageReceived', hasMsg(sent.msgId)), `${d.name} received the group message`);
      const got = r.args[0].find((m) => m.msgId === sent.msgId);
      assert.strictEqual(got.chatType, 1);
      assert.strictEqual(got.needGroupAck, true);
      assert.strictEqual(got.unread, true);
      // Step 2 as written, on a message still unread: it does nothing.
      assert.strictEqual(await d.run(`ctx.seed.groupAck(ctx.msg(${id}), ${JSON.stringify(ext)}); return ctx.msg(${id}).isUnread();`), true);
      // The chat page shows the message: marked read locally first. Then step 2 acks.
      await d.run(`
        await ctx.cm().getConversation(${JSON.stringify(gid)}, ctx.R.ChatType.GroupChat).markMessageAsRead(${id});
        const m = ctx.msg(${id});
        if (m.isUnread()) throw new Error('still unread');
        ctx.seed.groupAck(m, ${JSON.stringify(ext)});`);
      await d.waitFor(isCb('call', 'ackGroupMessageRead:ok'), `${d.name} group ack accepted`);
      assert.strictEqual(d.calls('call', 'ackGroupMessageRead:ok').length, 1);
      const count = d === frank ? 1 : 2;
      const rec = await erin.waitFor(isCb('seed.groupListener', 'onGroupMessageRead',
        (x) => x.args[0].some((a) => a.from === d.name)), `erin onGroupMessageRead from ${d.name}`);
      const ack = rec.args[0].find((a) => a.from === d.name);
      assert.strictEqual(ack.msgId, sent.msgId);
      assert.strictEqual(ack.content, ext);
      assert.strictEqual(ack.count, count);
      assert.ok(ack.ackId.length > 0 && ack.timestamp > 0);
      // Step 3: the sent message's groupAckCount rises (the object erin holds).
      assert.strictEqual(await erin.run(`return ctx.msg(${id}).groupAckCount();`), count);
    }

    // Step 4 as written (first page from the newest, startAckId ""), then page on with the cursor.
    await erin.run(`ctx.seed.groupFetch(${id}, 1, '');`);
    const first = await erin.waitFor(isCb('call', 'fetchGroupReadAcks:ok'), 'groupFetch result');
    const page1 = first.args[0];
    assert.deepStrictEqual(page1.data.map((a) => [a.from, a.count]), [['grace', 2]]);
    assert.ok(page1.cursor.length > 0, 'a cursor for the next page');
    const rest = await erin.run(`
      const out = [];
      let cursor = ${JSON.stringify(page1.cursor)};
      for (let i = 0; i < 5 && cursor !== ''; i++) {
        const r = await ctx.cm().fetchGroupReadAcks(${id}, 1, cursor);
        out.push(...r.getData().map((a) => [a.from, a.count, a.content]));
        cursor = r.getCursor();
      }
      return { out, cursor };`);
    assert.deepStrictEqual(rest, { out: [['frank', 1, 'ext-frank']], cursor: '' });
    const all = await erin.run(`const r = await ctx.cm().fetchGroupReadAcks(${id}, 10); return r;`);
    assert.deepStrictEqual(all.data.map((a) => a.from), ['grace', 'frank']);
    assert.strictEqual(all.cursor, '');

    // One ack per member: the same reader acking again forwards nothing new.
    await frank.run(`await ctx.cm().ackGroupMessageRead(ctx.msg(${id}), 'again');`);
    const again = await erin.run(`const r = await ctx.cm().fetchGroupReadAcks(${id}, 10); return r.getData().length;`);
    assert.strictEqual(again, 2);
    // The sender never acks its own message; page sizes out of range are invalid.
    await expectChatError(erin, 500, `await ctx.cm().ackGroupMessageRead(ctx.msg(${id}), 'mine');`);
    await expectChatError(erin, 110, `await ctx.cm().fetchGroupReadAcks(${id}, 0, '');`);
    await expectChatError(erin, 110, `await ctx.cm().fetchGroupReadAcks(${id}, 100000, '');`);
  }));

test('unread counts: getConversation(id).getUnreadMsgCount() and markAllMessagesAsRead, synced to the other device',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ start }) => {
    const heidi = await start('heidi');
    const ivan1 = await start('ivan', { name: 'ivan#1' });
    const ivan2 = await start('ivan', { name: 'ivan#2' });
    const sent = [];
    for (const c of ['a', 'b', 'c']) sent.push(await send(heidi, 'ivan', c));
    for (const d of [ivan1, ivan2]) {
      for (const m of sent) await d.waitFor(isCb('probe', 'onMessageReceived', hasMsg(m.msgId)), `${d.name} got ${m.content}`);
      await d.until("return ctx.cm().getConversation('heidi').getUnreadMsgCount();", (n) => n === 3, `${d.name} unread 3`);
    }
    assert.strictEqual(await heidi.run("return ctx.cm().getConversation('ivan').getUnreadMsgCount();"), 0);
    await ivan1.run("await ctx.cm().getConversation('heidi').markAllMessagesAsRead();");
    assert.strictEqual(await ivan1.run("return ctx.cm().getConversation('heidi').getUnreadMsgCount();"), 0);
    assert.deepStrictEqual(await ivan1.run(`return [${sent.map((m) => `ctx.msg(${JSON.stringify(m.msgId)}).isUnread()`).join(',')}];`), [false, false, false]);
    await ivan2.until("return ctx.cm().getConversation('heidi').getUnreadMsgCount();", (n) => n === 0, 'ivan#2 unread 0');
    // A local read sends no read ack.
    assert.deepStrictEqual(await heidi.run(`return [${sent.map((m) => `ctx.msg(${JSON.stringify(m.msgId)}).isReceiverRead()`).join(',')}];`), [false, false, false]);
  }));

test('errors arrive as ChatError with the SDK codes: 201 before login, 104 malformed and 202 bad token, 500 own message, 110 bad arguments',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ server, start }) => {
    const judy = await start('judy', { login: false });
    assert.strictEqual(await judy.run('return ctx.client.getCurrentUser();'), '');
    await expectChatError(judy, 201, "await ctx.cm().ackMessageRead('123');");
    await expectChatError(judy, 201, "await ctx.cm().ackConversationRead('kim');");
    await expectChatError(judy, 201, "await ctx.cm().sendMessage(ctx.R.ChatMessage.createTextSendMessage('kim', 'x'));");
    // A refused token: 104 when malformed, 202 when signed for someone else; nobody is logged in after it.
    await expectChatError(judy, 104, "await ctx.client.login('judy', 'not-a-token');");
    assert.strictEqual(await judy.run('return ctx.client.getCurrentUser();'), '');
    await expectChatError(judy, 202, `await ctx.client.login('judy', ${JSON.stringify(server.token('mallory'))});`);
    assert.strictEqual(await judy.run('return ctx.client.getCurrentUser();'), '');
    await judy.run(`await ctx.client.login('judy', ${JSON.stringify(server.token('judy'))});`);
    assert.strictEqual(await judy.run('return ctx.client.getCurrentUser();'), 'judy');
    await expectChatError(judy, 200, `await ctx.client.login('judy', ${JSON.stringify(server.token('judy'))});`);

    const own = await send(judy, 'kim', 'mine');
    await expectChatError(judy, 500, `await ctx.cm().ackMessageRead(${JSON.stringify(own.msgId)});`);
    await expectChatError(judy, 500, "await ctx.cm().ackMessageRead('999999999');");
    await expectChatError(judy, 110, `await ctx.cm().fetchGroupReadAcks(${JSON.stringify(own.msgId)}, 'ten');`);
    await expectChatError(judy, 110, "await ctx.cm().ackMessageRead(42);");
    assert.strictEqual(await judy.run("return ctx.cm().getMessage('424242');"), undefined);
    assert.strictEqual(await judy.run(`return ctx.cm().getMessage(${JSON.stringify(own.msgId)}).getContent();`), 'mine');

    // The shim's own argument checks (the native module called directly): {code: 110, description}.
    const native = await judy.run(`
      const native = ctx.require(ctx.require('node:path').join(${JSON.stringify(napiDir)}, 'libreceipt_napi.node'));
      const out = {};
      const grab = async (name, f) => {
        try { await f(); out[name] = 'no error'; } catch (e) { out[name] = { code: e.code, description: typeof e.description }; }
      };
      await grab('ackMessageRead(42)', () => native.ackMessageRead(42));
      await grab('sendMessage chatType 7', () => native.sendMessage('kim', 7, 'x', false));
      await grab('sendMessage needGroupAck "yes"', () => native.sendMessage('kim', 0, 'x', 'yes'));
      await grab('fetchGroupReadAcks -1', () => native.fetchGroupReadAcks('1', -1, ''));
      await grab('fetchGroupReadAcks 1.5', () => native.fetchGroupReadAcks('1', 1.5, ''));
      await grab('getUnreadCount(x, "0")', () => native.getUnreadCount('x', '0'));
      await grab('getMessage({})', () => native.getMessage({}));
      await grab('createGroup members', () => native.createGroup('g', ['ok', 5]));
      await grab('setEventHandler(1)', () => native.setEventHandler(1));
      await grab('login(nul)', () => native.login('a\\u0000b', 't'));
      await grab('init again', () => native.init({}));
      out.exportsArePlain = Object.getPrototypeOf(native) === Object.prototype && typeof native.init === 'function';
      out.unknown = native.getMessage('31337') === undefined;
      return out;`);
    for (const k of ['ackMessageRead(42)', 'sendMessage chatType 7', 'sendMessage needGroupAck "yes"', 'fetchGroupReadAcks -1',
      'fetchGroupReadAcks 1.5', 'getUnreadCount(x, "0")', 'getMessage({})', 'createGroup members', 'setEventHandler(1)', 'login(nul)']) {
      assert.deepStrictEqual(native[k], { code: 110, description: 'string' }, k);
    }
    assert.strictEqual(native['init again'].code, 1);
    assert.strictEqual(native.exportsArePlain, true);
    assert.strictEqual(native.unknown, true);

    // After logout: "" and 201 again.
    await judy.run('await ctx.client.logout();');
    assert.strictEqual(await judy.run('return ctx.client.getCurrentUser();'), '');
    await expectChatError(judy, 201, `await ctx.cm().ackConversationRead('kim');`);
  }));

test('several devices in one process each have their own client; an idle worker exits by itself; a message waits offline',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ start }) => {
    const leo = await start('leo');
    const mia = await start('mia');
    assert.notStrictEqual(leo.threadId, mia.threadId);
    assert.strictEqual(await leo.run('return ctx.client.getCurrentUser();'), 'leo');
    assert.strictEqual(await mia.run('return ctx.client.getCurrentUser();'), 'mia');
    // Logged in and idle: closing its port must let the worker end (the shim holds no loop ref).
    assert.strictEqual(await mia.finish(), 0);
    // Mia is offline now; her message waits on the server and arrives at her next login, with the
    // delivery of the backlog reaching the new worker's listeners.
    const m = await send(leo, 'mia', 'while you were away');
    const mia2 = await start('mia', { name: 'mia#2' });
    await mia2.waitFor(isCb('probe', 'onMessageReceived', hasMsg(m.msgId)), 'mia#2 gets the backlog');
    // A worker that was never logged in exits by itself too, and so does one that logged out.
    const nobody = await start('nobody', { login: false });
    assert.strictEqual(await nobody.finish(), 0);
    await leo.run('await ctx.client.logout();');
    assert.strictEqual(await leo.finish(), 0);
  }));

test('offline: an ack made while the server is down is kept and sent when it is back; logout rejects what still waits; login to a dead server is 300',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ server, start }) => {
    const alice = await start('alice');
    const bob = await start('bob');
    await alice.run("ctx.tagged('seed.readListener', () => ctx.seed.readListener());");
    const m1 = await send(alice, 'bob', 'one');
    const m2 = await send(alice, 'bob', 'two');
    for (const m of [m1, m2]) await bob.waitFor(isCb('probe', 'onMessageReceived', hasMsg(m.msgId)), `bob got ${m.content}`);

    await server.kill();
    await bob.waitFor(isCb('connection', 'onDisconnected'), 'bob disconnected');
    // Nobody can log in now: 300.
    const zed = await start('zed', { login: false });
    await expectChatError(zed, 300, `await ctx.client.login('zed', ${JSON.stringify(server.token('zed'))});`);
    assert.strictEqual(await zed.run('return ctx.client.getCurrentUser();'), '');

    // An ack while offline: accepted into the outbox; its promise waits for the server.
    await bob.run(`ctx.cm().ackMessageRead(${JSON.stringify(m1.msgId)}).catch(() => {});`);
    await new Promise((r) => setTimeout(r, 300));
    assert.strictEqual(bob.calls('call').filter((r) => r.cb.startsWith('ackMessageRead')).length, 0, 'settled while offline');
    assert.strictEqual(await bob.run(`return ctx.msg(${JSON.stringify(m1.msgId)}).isUnread();`), false);

    await server.restart();
    const ok = await bob.waitFor(isCb('call', 'ackMessageRead:ok', (r) => r.args[1] === m1.msgId), 'offline ack confirmed after reconnect', 45000);
    assert.ok(ok);
    await alice.waitFor(isCb('seed.readListener', 'onMessageRead', hasMsg(m1.msgId)), 'alice onMessageRead m1', 45000);

    // Offline again; an ack waits; logout rejects its promise (201) but the ack stays queued on
    // disk and goes out at the next login.
    await server.kill();
    await bob.waitFor((r) => r.listener === 'connection' && r.cb === 'onDisconnected' && r.seq > ok.seq, 'bob disconnected again');
    await bob.run(`ctx.cm().ackMessageRead(${JSON.stringify(m2.msgId)}).catch(() => {});`);
    await bob.run('await ctx.client.logout();');
    const rejected = await bob.waitFor(isCb('call', 'ackMessageRead:error', (r) => r.args[1] === m2.msgId), 'pending ack rejected at logout');
    assert.strictEqual(rejected.args[0].code, 201);
    assert.strictEqual(await bob.run('return ctx.client.getCurrentUser();'), '');
    await server.restart();
    await bob.run(`await ctx.client.login('bob', ${JSON.stringify(server.token('bob'))});`, 30000);
    await alice.waitFor(isCb('seed.readListener', 'onMessageRead', hasMsg(m2.msgId)), 'alice onMessageRead m2 (queued ack)', 45000);
  }));

test('native module session edges: login, logout and login again in one tick; every promise settles',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ server, start }) => {
    const nia = await start('nia', { login: false });
    const tok = JSON.stringify(server.token('nia'));
    const out = await nia.run(`
      const native = ctx.require(ctx.require('node:path').join(${JSON.stringify(napiDir)}, 'libreceipt_napi.node'));
      const settle = (p) => p.then(() => 'resolved', (e) => e.code);
      const first = settle(native.login('nia', ${tok}));
      const out1 = settle(native.logout());
      const second = settle(native.login('nia', ${tok}));
      const res = { first: await first, logout: await out1, second: await second, user: native.currentUser() };
      res.logoutAgain = await settle(native.logout());
      res.logoutTwice = await settle(native.logout());
      res.userAfter = native.currentUser();
      return res;`);
    assert.deepStrictEqual(out, { first: 201, logout: 'resolved', second: 'resolved', user: 'nia',
      logoutAgain: 'resolved', logoutTwice: 201, userAfter: '' });
  }));

test('thin bindings: the message objects the app holds follow a conversation read by another device of the user and by the peer, with no call from the app',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ start }) => {
    const olga = await start('olga');
    const paul1 = await start('paul', { name: 'paul#1' });
    const paul2 = await start('paul', { name: 'paul#2' });
    const sent = [await send(olga, 'paul', 'one'), await send(olga, 'paul', 'two')];
    const ids = JSON.stringify(sent.map((m) => m.msgId));
    for (const d of [paul1, paul2]) {
      for (const m of sent) await d.waitFor(isCb('probe', 'onMessageReceived', hasMsg(m.msgId)), `${d.name} got ${m.content}`);
    }
    // The objects the listeners handed out (paul#1) and the ones olga sent, as the app holds them.
    const flags = `return ${ids}.map((id) => { const m = ctx.msg(id); return [m.isUnread(), m.isReceiverRead()]; });`;
    assert.deepStrictEqual(await paul1.run(flags), [[true, false], [true, false]]);
    assert.deepStrictEqual(await olga.run(flags), [[false, false], [false, false]]);
    // Inside onConversationRead, the held objects already show the read (the update comes first).
    for (const d of [paul1, olga]) {
      await d.run(`ctx.cm().addConversationListener({ onConversationRead: () => {
        ctx.state.atRead = ${ids}.map((id) => ctx.msg(id).isReceiverRead()); } });`);
    }

    // paul#2 reads the conversation; paul#1 and olga call nothing but plain getters afterwards.
    await paul2.run("await ctx.cm().ackConversationRead('olga');");
    await paul1.until(flags, (v) => JSON.stringify(v) === JSON.stringify([[false, true], [false, true]]),
      'paul#1 objects read and acked (another device of paul read the conversation)');
    assert.deepStrictEqual(await paul1.run('return ctx.state.atRead;'), [true, true]);
    await olga.until(flags, (v) => JSON.stringify(v) === JSON.stringify([[false, true], [false, true]]),
      'olga objects read by the receiver (the peer read the conversation)');
    assert.deepStrictEqual(await olga.run('return ctx.state.atRead;'), [true, true]);

    // Only what the read covered: a later message stays unread on both of paul's devices.
    const later = await send(olga, 'paul', 'three');
    for (const d of [paul1, paul2]) {
      await d.waitFor(isCb('probe', 'onMessageReceived', hasMsg(later.msgId)), `${d.name} got three`);
      assert.deepStrictEqual(await d.run(`const m = ctx.msg(${JSON.stringify(later.msgId)}); return [m.isUnread(), m.isReceiverRead()];`),
        [true, false]);
    }
    assert.strictEqual(await olga.run(`return ctx.msg(${JSON.stringify(later.msgId)}).isReceiverRead();`), false);
  }));
