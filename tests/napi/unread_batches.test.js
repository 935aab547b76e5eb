// Who has not read a group message (fetchGroupUnreadMembers), read counts for a screen
// (fetchGroupAckCounts) and 1:1 read acks in one trip (ackMessagesRead), through the ArkTS API
// over the shim and the C ABI against a real server: unknown ids, ids of other conversations,
// over-long batches, a non-sender asking, wrong types.
//
// Needs: scripts/build-napi.sh. Run: node --test tests/napi/
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { skip, scenario, hasMsg, isCb } = require('./helpers/scenario');

const TEST_TIMEOUT = 90000;


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

test('fetchGroupUnreadMembers pages who has not read; fetchGroupAckCounts counts a screen of messages',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ start }) => {
    const erin = await start('erin');
    const frank = await start('frank');
    const grace = await start('grace');
    const heidi = await start('heidi');
    const gid = await erin.run("return await ctx.client.groupManager().createGroup('team', ['frank', 'grace', 'heidi']);");
    const sent = await send(erin, gid, 'who read?', { group: true });
    const other = await send(erin, gid, 'nobody yet', { group: true });
    const id = JSON.stringify(sent.msgId);
    await frank.waitFor(isCb('probe', 'onMessageReceived', hasMsg(sent.msgId)), 'frank received');
    await frank.run(`await ctx.cm().ackGroupMessageRead(ctx.msg(${id}), '');`);

    const pages = await erin.run(`
      const out = [];
      let cursor = '';
      for (let i = 0; i < 5; i++) {
        const r = await ctx.cm().fetchGroupUnreadMembers(${id}, 1, cursor);
        if (!(r instanceof ctx.R.CursorResult)) throw new Error('not a CursorResult');
        out.push(r.getResult());
        cursor = r.getNextCursor();
        if (cursor === '') break;
      }
      return out;`);
    assert.deepStrictEqual(pages, [['grace'], ['heidi']]);
    const all = await erin.run(`const r = await ctx.cm().fetchGroupUnreadMembers(${id}, 20); return r.getData();`);
    assert.deepStrictEqual(all, ['grace', 'heidi']);

    // Counts: the ids erin may see; unknown ids and a 1:1 message are absent.
    const oneToOne = await send(erin, 'frank', 'hi');
    const counts = await erin.run(`
      const m = await ctx.cm().fetchGroupAckCounts([${id}, ${JSON.stringify(other.msgId)}, '999999', ${JSON.stringify(oneToOne.msgId)}]);
      return [...m.entries()];`);
    assert.deepStrictEqual(counts, [[sent.msgId, 1], [other.msgId, 0]]);
    // read + unread = members at send time still in the group.
    assert.strictEqual(counts[0][1] + all.length, 3);

    // A non-sender: the unread list is refused (603); its count is absent.
    await expectChatError(grace, 603, `await ctx.cm().fetchGroupUnreadMembers(${id}, 10);`);
    const graceCounts = await grace.run(`const m = await ctx.cm().fetchGroupAckCounts([${id}]); return m.size;`);
    assert.strictEqual(graceCounts, 0);

    // Over-long batches, empty ones and wrong types: 110.
    const many = JSON.stringify(Array(21).fill(sent.msgId));
    await expectChatError(erin, 110, `await ctx.cm().fetchGroupAckCounts(${many});`);
    await expectChatError(erin, 110, 'await ctx.cm().fetchGroupAckCounts([]);');
    await expectChatError(erin, 110, `await ctx.cm().fetchGroupAckCounts(${id});`);
    await expectChatError(erin, 110, 'await ctx.cm().fetchGroupAckCounts([1, 2]);');
    await expectChatError(erin, 110, `await ctx.cm().fetchGroupUnreadMembers(${id}, 'ten');`);
    await expectChatError(erin, 110, `await ctx.cm().fetchGroupUnreadMembers(${id}, 0);`);
    await expectChatError(erin, 110, `await ctx.cm().fetchGroupUnreadMembers(${id}, 10, 5);`);
    await expectChatError(erin, 110, 'await ctx.cm().fetchGroupUnreadMembers(42, 10);');
    await expectChatError(erin, 500, 'await ctx.cm().fetchGroupUnreadMembers("999999", 10);');
  }));

test('ackMessagesRead acks several 1:1 messages in one trip with one result per id',
  { skip, timeout: TEST_TIMEOUT }, () => scenario(async ({ start }) => {
    const ivan = await start('ivan');
    const judy = await start('judy');
    const mallory = await start('mallory');
    const m1 = await send(ivan, 'judy', 'one');
    const m2 = await send(ivan, 'judy', 'two');
    const fromMallory = await send(mallory, 'judy', 'another conversation');
    await judy.waitFor(isCb('probe', 'onMessageReceived', hasMsg(fromMallory.msgId)), 'judy received all');
    const results = await judy.run(`
      const r = await ctx.cm().ackMessagesRead('ivan', [${JSON.stringify(m1.msgId)}, ${JSON.stringify(fromMallory.msgId)}, '999999', ${JSON.stringify(m2.msgId)}]);
      return [...r.entries()].map(([id, e]) => [id, e === null ? 0 : (e instanceof ctx.R.ChatError ? e.code : -1)]);`);
    assert.deepStrictEqual(results, [[m1.msgId, 0], [fromMallory.msgId, 500], ['999999', 500], [m2.msgId, 0]]);
    const why = await judy.run(`
      const r = await ctx.cm().ackMessagesRead('ivan', [${JSON.stringify(fromMallory.msgId)}]);
      return r.get(${JSON.stringify(fromMallory.msgId)}).description;`);
    assert.strictEqual(why, `message ${fromMallory.msgId} is not from ivan`);
    // Ivan hears both reads; judy's copies are read.
    for (const m of [m1, m2]) {
      await ivan.waitFor(isCb('probe', 'onMessageRead', hasMsg(m.msgId)), `ivan told ${m.msgId} was read`);
    }
    assert.strictEqual(await judy.run(`return ctx.msg(${JSON.stringify(m2.msgId)}).isUnread();`), false);
    assert.strictEqual(await judy.run(`return ctx.msg(${JSON.stringify(fromMallory.msgId)}).isUnread();`), true);

    const many = JSON.stringify(Array(21).fill(m1.msgId));
    await expectChatError(judy, 110, `await ctx.cm().ackMessagesRead('ivan', ${many});`);
    await expectChatError(judy, 110, "await ctx.cm().ackMessagesRead('ivan', []);");
    await expectChatError(judy, 110, `await ctx.cm().ackMessagesRead('', [${JSON.stringify(m1.msgId)}]);`);
    await expectChatError(judy, 110, `await ctx.cm().ackMessagesRead(7, [${JSON.stringify(m1.msgId)}]);`);
    await expectChatError(judy, 110, `await ctx.cm().ackMessagesRead('ivan', ${JSON.stringify(m1.msgId)});`);
  }));
