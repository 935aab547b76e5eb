// Group delivery receipts through the ArkTS API (compiled to CommonJS) over the NAPI shim over
// the C ABI, against a real receipt-server with `[group_delivery_ack] enabled = true`: a member's
// SDK acks on receipt (online and offline backlog), the sender hears onGroupMessageDelivered and
// sees groupDeliveredCount(), pages fetchGroupDeliveryAcks; then the bad input (wrong types from
// ArkTS, unknown ids, ids of other groups, a non-sender asking, page sizes out of bounds).
//
// Needs: scripts/build-napi.sh. Run: node --test tests/napi/
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { napiDir } = require('./helpers/device');
const { skip, scenario, hasMsg, isCb } = require('./helpers/scenario');

const TEST_TIMEOUT = 90000;

// The feature on, from the config file's section or from the command line.
const ON = { configToml: '[group_delivery_ack]\nenabled = true' };
const ON_BY_FLAG = { extraArgs: ['--group-delivery-ack-enabled', 'true'] };
const deliveredBy = (id, from) => isCb('probe', 'onGroupMessageDelivered',
  (r) => r.args[0].some((a) => a.msgId === id && a.from === from));

/** Sends a group message asking for delivery acks (and read acks when `readAcks`). */
async function sendAsking(d, gid, content, readAcks = false) {
  return d.run(`
    const m = ctx.R.ChatMessage.createTextSendMessage(${JSON.stringify(gid)}, ${JSON.stringify(content)});
    m.setChatType(ctx.R.ChatType.GroupChat);
    m.setIsNeedGroupDeliveryAck(true);
    ${readAcks ? 'm.setIsNeedGroupAck(true);' : ''}
    if (!m.isNeedGroupDeliveryAck()) throw new Error('the setter did not take');
    await ctx.cm().sendMessage(m);
    return m;`);
}

/** Runs `body` in `d` and expects it to throw or reject with ChatError `code`. */
async function expectChatError(d, code, body) {
  const res = await d.run(`
    try {
      ${body}
    } catch (e) {
      return { threw: true, isChatError: e instanceof ctx.R.ChatError, code: e.errorCode };
    }
    return { threw: false };`);
  assert.ok(res.threw, `expected ChatError ${code}, nothing thrown: ${body}`);
  assert.ok(res.isChatError, `expected a ChatError: ${JSON.stringify(res)}`);
  assert.strictEqual(res.code, code, `${body}: ${JSON.stringify(res)}`);
}

test('group delivery acks: acked on receipt and at login, onGroupMessageDelivered, groupDeliveredCount, fetchGroupDeliveryAcks paging',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(ON, async ({ server, start }) => {
    const alice = await start('alice');
    const bob = await start('bob');
    const carol = await start('carol', { login: false });
    const gid = await alice.run("return await ctx.client.groupManager().createGroup('team', ['bob', 'carol']);");
    const sent = await sendAsking(alice, gid, 'did it arrive?');
    assert.strictEqual(sent.needGroupDeliveryAck, true, 'the server kept the request');
    assert.strictEqual(sent.groupDeliveredCount, 0);
    const id = JSON.stringify(sent.msgId);

    // Bob's SDK acks by itself: no call of the app.
    const r = await bob.waitFor(isCb('probe', 'onMessageReceived', hasMsg(sent.msgId)), 'bob received');
    assert.strictEqual(r.args[0].find((m) => m.msgId === sent.msgId).needGroupDeliveryAck, true);
    const d1 = await alice.waitFor(deliveredBy(sent.msgId, 'bob'), 'alice hears bob\'s delivery');
    const a1 = d1.args[0].find((a) => a.from === 'bob');
    assert.strictEqual(a1.count, 1);
    assert.strictEqual(a1.content, '');
    assert.strictEqual(await alice.run(`return ctx.msg(${id}).groupDeliveredCount();`), 1);

    // Carol was offline: her SDK acks the backlog at login.
    await carol.run(`await ctx.client.loginWithToken('carol', ${JSON.stringify(server.token('carol'))});`);
    const d2 = await alice.waitFor(deliveredBy(sent.msgId, 'carol'), 'alice hears carol\'s delivery');
    assert.strictEqual(d2.args[0].find((a) => a.from === 'carol').count, 2);
    await alice.until(`return ctx.msg(${id}).groupDeliveredCount();`, (n) => n === 2, 'count 2');
    // Delivery is not reading: no read ack, the count of readers stays 0.
    assert.strictEqual(alice.calls('probe', 'onGroupMessageRead').length, 0);
    assert.strictEqual(await alice.run(`return ctx.msg(${id}).groupAckCount();`), 0);

    // The list, one ack a page, newest first.
    const p1 = await alice.run(`return await ctx.cm().fetchGroupDeliveryAcks(${id}, 1);`);
    assert.deepStrictEqual(p1.data.map((a) => a.from), ['carol']);
    assert.ok(p1.cursor.length > 0);
    const p2 = await alice.run(`return await ctx.cm().fetchGroupDeliveryAcks(${id}, 1, ${JSON.stringify(p1.cursor)});`);
    assert.deepStrictEqual(p2.data.map((a) => a.from), ['bob']);
    assert.strictEqual(p2.cursor, '');
    const all = await alice.run(`const r = await ctx.cm().fetchGroupDeliveryAcks(${id}, 10, '');
      return r.getData().map((a) => [a.getFrom(), a.getCount(), a.getMsgId()]);`);
    assert.deepStrictEqual(all, [['carol', 2, sent.msgId], ['bob', 1, sent.msgId]]);
    // Nobody acked twice, and the sender never acked its own message.
    assert.strictEqual(alice.calls('probe', 'onGroupMessageDelivered').flatMap((c) => c.args[0]).length, 2);
  }));

test('group delivery acks: bad input from ArkTS and hostile requests get the SDK codes',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(ON_BY_FLAG, async ({ start }) => {
    const alice = await start('alice');
    const bob = await start('bob');
    const dave = await start('dave');
    const gid = await alice.run("return await ctx.client.groupManager().createGroup('team', ['bob']);");
    const other = await dave.run("return await ctx.client.groupManager().createGroup('other', ['erin']);");
    const sent = await sendAsking(alice, gid, 'x');
    const foreign = await sendAsking(dave, other, 'not yours');
    const id = JSON.stringify(sent.msgId);
    await alice.waitFor(deliveredBy(sent.msgId, 'bob'), 'bob delivered');

    // Wrong types from ArkTS: 110, nothing sent.
    for (const v of ["'yes'", '1', 'null', '{}']) {
      await expectChatError(alice, 110, `const m = ctx.R.ChatMessage.createTextSendMessage('bob', 'x');
        m.setIsNeedGroupDeliveryAck(${v});`);
    }
    for (const call of [
      'ctx.cm().fetchGroupDeliveryAcks(42, 10)',
      "ctx.cm().fetchGroupDeliveryAcks('', 10)",
      `ctx.cm().fetchGroupDeliveryAcks(${id}, '10')`,
      `ctx.cm().fetchGroupDeliveryAcks(${id}, 1.5)`,
      `ctx.cm().fetchGroupDeliveryAcks(${id}, 10, 7)`,
      `ctx.cm().fetchGroupDeliveryAcks(${id}, 0)`,
      `ctx.cm().fetchGroupDeliveryAcks(${id}, 101)`,
      `ctx.cm().fetchGroupDeliveryAcks(${id}, 10, 'not-a-cursor')`,
    ]) {
      await expectChatError(alice, 110, `await ${call};`);
    }
    // Unknown id: 500. An id of another group, a member who is not the sender: 603.
    await expectChatError(alice, 500, "await ctx.cm().fetchGroupDeliveryAcks('999999', 10);");
    await expectChatError(alice, 603, `await ctx.cm().fetchGroupDeliveryAcks(${JSON.stringify(foreign.msgId)}, 10);`);
    await expectChatError(bob, 603, `await ctx.cm().fetchGroupDeliveryAcks(${id}, 10);`);
    // The native layer refuses a wrong type of the new argument too (the HAR never sends one).
    await expectChatError(alice, 110, `await ctx.require(${JSON.stringify(path.join(napiDir, 'libreceipt_napi.node'))})
      .sendMessage(${JSON.stringify(gid)}, 1, 'x', false, 'yes').catch((e) => { throw new ctx.R.ChatError(e.code, e.description); });`);
  }));

test('group delivery acks: off by default; the request is dropped and nothing is acked',
  { skip, timeout: TEST_TIMEOUT }, () => scenario({}, async ({ start }) => {
    const alice = await start('alice');
    const bob = await start('bob');
    const gid = await alice.run("return await ctx.client.groupManager().createGroup('team', ['bob']);");
    const sent = await sendAsking(alice, gid, 'x');
    assert.strictEqual(sent.needGroupDeliveryAck, false, 'dropped: the feature is off');
    await bob.waitFor(isCb('probe', 'onMessageReceived', hasMsg(sent.msgId)), 'bob received');
    const page = await alice.run(`return await ctx.cm().fetchGroupDeliveryAcks(${JSON.stringify(sent.msgId)}, 10);`);
    assert.deepStrictEqual(page.data, []);
    assert.strictEqual(alice.calls('probe', 'onGroupMessageDelivered').length, 0);
  }));
