// Private reading (ChatOptions.setPrivateReadReceipts, and { privately } per read-ack call)
// through the ArkTS API over the shim and the C ABI against a real server: the reader's own
// devices and unread counts follow, the sender hears nothing; a later public ack tells the sender
// once; group counts and "who has not read" do not move; wrong types from ArkTS are 110.
//
// Needs: scripts/build-napi.sh. Run: node --test tests/napi/
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { napiDir } = require('./helpers/device');
const { skip, scenario, hasMsg, isCb } = require('./helpers/scenario');

const TEST_TIMEOUT = 120000;

const readOf = (d, id) => d.calls('probe', 'onMessageRead').filter(hasMsg(id));

async function send(d, to, content, { group = false } = {}) {
  return d.run(`
    const m = ctx.R.ChatMessage.createTextSendMessage(${JSON.stringify(to)}, ${JSON.stringify(content)});
    ${group ? 'm.setChatType(ctx.R.ChatType.GroupChat); m.setIsNeedGroupAck(true);' : ''}
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
  return res;
}

// The shim itself rejects with a plain { code, description } (the ArkTS layer makes it a ChatError).
async function expectNativeError(d, code, body) {
  const res = await d.run(`
    try {
      ${body}
    } catch (e) {
      return { threw: true, code: e.code, description: e.description };
    }
    return { threw: false };`);
  assert.ok(res.threw, `expected code ${code}, nothing thrown: ${body}`);
  assert.strictEqual(res.code, code, `expected code ${code}: ${JSON.stringify(res)}`);
}

const unread = (d, peer) => d.run(`return ctx.cm().getConversation(${JSON.stringify(peer)}, ctx.R.ConversationType.Chat, true).getUnreadMsgCount();`);
const untilUnread = (d, peer, n, what) =>
  d.until(`return ctx.cm().getConversation(${JSON.stringify(peer)}, ctx.R.ConversationType.Chat, true).getUnreadMsgCount();`,
    (v) => v === n, what);

test('a private read ack syncs own devices and tells the sender nothing; a later public ack tells it once',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ start }) => {
    const alice = await start('alice');
    const phone = await start('bob', { name: 'bob-phone', privateReadReceipts: true });
    const tablet = await start('bob', { name: 'bob-tablet' });
    assert.strictEqual(await phone.run('return ctx.options.getPrivateReadReceipts();'), true);
    assert.strictEqual(await tablet.run('return ctx.options.getPrivateReadReceipts();'), false, 'default false');
    const m1 = await send(alice, 'bob', 'one');
    const m2 = await send(alice, 'bob', 'two');
    const m3 = await send(alice, 'bob', 'three');
    await untilUnread(phone, 'alice', 3, 'phone has 3 unread');
    await untilUnread(tablet, 'alice', 3, 'tablet has 3 unread');

    // The option: private. Read here and on the tablet; no receipt flag.
    await phone.run(`await ctx.cm().ackMessageRead(${JSON.stringify(m1.msgId)});`);
    const flags = await phone.run(`const m = ctx.msg(${JSON.stringify(m1.msgId)}); return [m.isUnread(), m.isReceiverRead()];`);
    assert.deepStrictEqual(flags, [false, false]);
    assert.strictEqual(await unread(phone, 'alice'), 2);
    await untilUnread(tablet, 'alice', 2, 'the tablet follows the private read');

    // Per call, public (two-argument form with options): alice hears of m2 ...
    await phone.run(`await ctx.cm().ackMessageRead('alice', ${JSON.stringify(m2.msgId)}, { privately: false });`);
    await alice.waitFor(isCb('probe', 'onMessageRead', hasMsg(m2.msgId)), 'alice told m2 was read');
    // ... and, events arriving in order, nothing of m1 before it.
    assert.strictEqual(readOf(alice, m1.msgId).length, 0, 'the private read reached the sender');
    assert.strictEqual(await alice.run(`return ctx.msg(${JSON.stringify(m1.msgId)}).isReceiverRead();`), false);

    // The mode switched off for m1: the sender is told now, once.
    await phone.run(`await ctx.cm().ackMessageRead(${JSON.stringify(m1.msgId)}, { privately: false });`);
    await phone.run(`await ctx.cm().ackMessageRead(${JSON.stringify(m1.msgId)}, { privately: false });`);
    await alice.waitFor(isCb('probe', 'onMessageRead', hasMsg(m1.msgId)), 'alice told m1 was read');
    assert.strictEqual(await alice.run(`return ctx.msg(${JSON.stringify(m1.msgId)}).isReceiverRead();`), true);

    // A private conversation ack: own devices at 0, the peer hears nothing.
    await phone.run("await ctx.cm().ackConversationRead('alice');");
    await untilUnread(tablet, 'alice', 0, 'the tablet follows the private conversation ack');
    // A batch made private per call from the tablet (option off there).
    const m4 = await send(alice, 'bob', 'four');
    await untilUnread(tablet, 'alice', 1, 'tablet got m4');
    const results = await tablet.run(`
      const r = await ctx.cm().ackMessagesRead('alice', [${JSON.stringify(m4.msgId)}], { privately: true });
      return [...r.entries()].map(([id, e]) => [id, e === null ? 0 : e.code]);`);
    assert.deepStrictEqual(results, [[m4.msgId, 0]]);
    await untilUnread(phone, 'alice', 0, 'the phone follows the private batch');
    // Now a public conversation ack: alice hears onConversationRead, and that is the first.
    const m5 = await send(alice, 'bob', 'five');
    await untilUnread(tablet, 'alice', 1, 'tablet got m5');
    await tablet.run("await ctx.cm().ackConversationRead('alice');");
    await alice.waitFor(isCb('probe', 'onConversationRead'), 'alice told of the public conversation ack');
    assert.strictEqual(alice.calls('probe', 'onConversationRead').length, 1, 'the private conversation ack reached the sender');
    assert.strictEqual(readOf(alice, m3.msgId).length + readOf(alice, m4.msgId).length, 0);
    assert.strictEqual(await alice.run(`return ctx.msg(${JSON.stringify(m5.msgId)}).isReceiverRead();`), true);
  }));

test('a private group read ack leaves the count and who has not read alone',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ start }) => {
    const erin = await start('erin');
    const frank = await start('frank', { privateReadReceipts: true });
    const grace = await start('grace');
    const gid = await erin.run("return await ctx.client.groupManager().createGroup('team', ['frank', 'grace']);");
    const sent = await send(erin, gid, 'who read?', { group: true });
    const id = JSON.stringify(sent.msgId);
    await frank.waitFor(isCb('probe', 'onMessageReceived', hasMsg(sent.msgId)), 'frank received');
    await grace.waitFor(isCb('probe', 'onMessageReceived', hasMsg(sent.msgId)), 'grace received');
    await frank.run(`await ctx.cm().ackGroupMessageRead(ctx.msg(${id}), 'seen');`);
    const f = await frank.run(`const m = ctx.msg(${id}); return [m.isUnread(), m.isReceiverRead()];`);
    assert.deepStrictEqual(f, [false, false]);
    // grace acks publicly: erin hears grace's ack, and frank's never came before it.
    await grace.run(`await ctx.cm().ackGroupMessageRead(ctx.msg(${id}), 'me');`);
    await erin.waitFor(isCb('probe', 'onGroupMessageRead'), 'erin told of grace');
    const froms = erin.calls('probe', 'onGroupMessageRead').flatMap((r) => r.args[0].map((a) => a.from ?? a.getFrom?.()));
    assert.deepStrictEqual(froms, ['grace']);
    const counts = await erin.run(`const m = await ctx.cm().fetchGroupAckCounts([${id}]); return [...m.entries()];`);
    assert.deepStrictEqual(counts, [[sent.msgId, 1]]);
    const unreadMembers = await erin.run(`const r = await ctx.cm().fetchGroupUnreadMembers(${id}, 20); return r.getResult();`);
    assert.deepStrictEqual(unreadMembers, ['frank'], 'a private reader is still listed as not read');
    const acks = await erin.run(`const r = await ctx.cm().fetchGroupReadAcks(${id}, 20, ''); return r.getResult().map((a) => a.getFrom());`);
    assert.deepStrictEqual(acks, ['grace']);
  }));

test('wrong types for private reading are 110 INVALID_PARAM; requireReadAck false wins (505)',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ start }) => {
    const ivan = await start('ivan');
    const judy = await start('judy');
    const off = await start('mallory', { requireReadAck: false, privateReadReceipts: true });
    const m = await send(ivan, 'judy', 'hi');
    const toOff = await send(ivan, 'mallory', 'hi');
    const id = JSON.stringify(m.msgId);
    await judy.waitFor(isCb('probe', 'onMessageReceived', hasMsg(m.msgId)), 'judy received');
    await off.waitFor(isCb('probe', 'onMessageReceived', hasMsg(toOff.msgId)), 'mallory received');

    await expectChatError(judy, 110, "ctx.options.setPrivateReadReceipts('yes');");
    await expectChatError(judy, 110, 'ctx.options.setPrivateReadReceipts(1);');
    await expectChatError(judy, 110, `await ctx.cm().ackMessageRead(${id}, { privately: 'yes' });`);
    await expectChatError(judy, 110, `await ctx.cm().ackMessageRead('ivan', ${id}, { privately: 1 });`);
    await expectChatError(judy, 110, `await ctx.cm().ackMessageRead(${id}, true);`);
    await expectChatError(judy, 110, `await ctx.cm().ackMessageRead(${id}, 2);`);
    await expectChatError(judy, 110, `await ctx.cm().ackMessageRead('ivan', ${id}, 'private');`);
    await expectChatError(judy, 110, "await ctx.cm().ackConversationRead('ivan', { privately: null });");
    await expectChatError(judy, 110, "await ctx.cm().ackConversationRead('ivan', 'private');");
    await expectChatError(judy, 110, `await ctx.cm().ackGroupMessageRead(ctx.msg(${id}), '', { privately: 'no' });`);
    await expectChatError(judy, 110, `await ctx.cm().ackMessagesRead('ivan', [${id}], true);`);
    await expectChatError(judy, 110, `await ctx.cm().ackMessagesRead('ivan', [${id}], { privately: [] });`);
    // The shim refuses a bad mode itself (an app bypassing the ArkTS layer).
    const native = `ctx.require(${JSON.stringify(path.join(napiDir, 'libreceipt_napi.node'))})`;
    await expectNativeError(judy, 110, `await ${native}.ackMessageRead(${id}, 3);`);
    await expectNativeError(judy, 110, `await ${native}.ackMessageRead(${id}, 'private');`);
    await expectNativeError(judy, 110, `await ${native}.ackConversationRead('ivan', 1.5);`);
    await expectNativeError(judy, 110, `await ${native}.ackGroupMessageRead(${id}, '', -1);`);
    await expectNativeError(judy, 110, `await ${native}.ackMessagesRead('ivan', [${id}], true);`);
    // Nothing of that changed judy's state or told ivan anything.
    assert.strictEqual(await unread(judy, 'ivan'), 1);
    assert.strictEqual(await judy.run(`return ctx.msg(${id}).isUnread();`), true);

    // requireReadAck false wins over private reading: nothing is sent, 505.
    const offId = JSON.stringify(toOff.msgId);
    await expectChatError(off, 505, `await ctx.cm().ackMessageRead(${offId});`);
    await expectChatError(off, 505, `await ctx.cm().ackMessageRead(${offId}, { privately: true });`);
    await expectChatError(off, 505, "await ctx.cm().ackConversationRead('ivan', { privately: true });");
    assert.strictEqual(await unread(off, 'ivan'), 1);

    // A good private ack still works after all that, and ivan hears nothing of it (checked
    // behind a later public one).
    await judy.run(`await ctx.cm().ackMessageRead(${id}, { privately: true });`);
    assert.strictEqual(await unread(judy, 'ivan'), 0);
    const m2 = await send(ivan, 'judy', 'again');
    await judy.waitFor(isCb('probe', 'onMessageReceived', hasMsg(m2.msgId)), 'judy received m2');
    await judy.run(`await ctx.cm().ackMessageRead(${JSON.stringify(m2.msgId)});`);
    await ivan.waitFor(isCb('probe', 'onMessageRead', hasMsg(m2.msgId)), 'ivan told of m2');
    assert.strictEqual(readOf(ivan, m.msgId).length, 0);
  }));
