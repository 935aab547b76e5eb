// tests/napi/SdkDocsCompat.ets (app code written from the Easemob HarmonyOS SDK's docs, linted by
// scripts/check-arkts.sh) run as written, compiled, against a real receipt-server: receipts, group
// read ack paging, unread counts and the SDK's error codes. Setup (server, devices, login, group
// creation) and observation are ours; every receipt action is the fixture's code.
// Needs: scripts/build-napi.sh. Run: node --test tests/napi/
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { skip, scenario } = require('./helpers/scenario');

const TEST_TIMEOUT = 90000;
const J = JSON.stringify;

/** The fixture's `events` on device `d` once `pred` holds for them (bounded wait). */
function eventsUntil(d, pred, what) {
  return d.until('return ctx.sdk.events.slice();', pred, what);
}
const has = (e) => (events) => events.includes(e);

test('SDK docs code: options forms, delivery and read receipts, conversation read ack, unread counts',
  { skip, timeout: TEST_TIMEOUT }, () => scenario({}, async ({ start }) => {
    const alice = await start('alice', { requireDeliveryAck: true });
    const bob = await start('bob');

    // Both ChatOptions forms of the docs build options carrying the app key.
    assert.deepStrictEqual(await alice.run(`
      const o = ctx.sdk.makeOptions('org#app');
      return [o.getAppKey(), o.getRequireDeliveryAck(), o.getRequireReadAck(), ctx.sdk.makeOptionsFromKey('org#old').getAppKey()];`),
    ['org#app', true, true, 'org#old']);

    await alice.run('ctx.sdk.listenForReceipts(false);');
    await bob.run('ctx.sdk.listenForReceipts(true);');

    // 1:1: bob's listener acks what it receives; alice hears delivered and read.
    const id = await alice.run("return await ctx.sdk.sendText('bob', 'hello');");
    assert.ok(typeof id === 'string' && id.length > 0);
    await eventsUntil(bob, has(`received:${id}`), 'bob received');
    await eventsUntil(alice, has(`delivered:${id}:true`), 'alice onMessageDelivered');
    await eventsUntil(alice, has(`read:${id}:true`), 'alice onMessageRead');

    // Counts: three messages to a device that does not ack on receipt; carol's second device
    // listens for what the first one does.
    const carol = await start('carol');
    const carol2 = await start('carol', { name: 'carol#2' });
    await carol.run('ctx.sdk.listenForReceipts(false); ctx.sdk.listenForText();');
    await carol2.run('ctx.sdk.listenForOtherDevices();');
    const ids = [];
    for (const text of ['a', 'b', 'c']) ids.push(await alice.run(`return await ctx.sdk.sendText('carol', ${J(text)});`));
    await eventsUntil(carol, (ev) => ids.every((i) => ev.includes(`received:${i}`)), 'carol received three');
    await eventsUntil(carol, (ev) => ['a', 'b', 'c'].every((t) => ev.includes(`text:${t}:alice:true`)), 'text bodies read as the docs do');
    assert.ok(!(await carol.run('return ctx.sdk.events.slice();')).some((e) => e.startsWith('cmd:')), 'no command messages');
    await carol.until("return ctx.sdk.unreadCountOf('alice', ctx.R.ConversationType.Chat);", (n) => n === 3, 'carol unread 3');
    assert.strictEqual(await carol.run('return ctx.sdk.totalUnreadCount();'), 3);
    // A conversation carol never had: undefined, counted as 0.
    assert.strictEqual(await carol.run("return ctx.sdk.unreadCountOf('nobody', ctx.R.ConversationType.Chat);"), 0);
    assert.ok((await carol.run('return ctx.sdk.events.slice();')).includes('conversationUpdate'), 'onConversationUpdate on new messages');

    // The chat page opens: conversation read ack, then the count is cleared.
    await carol.run("await ctx.sdk.readConversation('alice');");
    assert.strictEqual(await carol.run("return ctx.sdk.unreadCountOf('alice', ctx.R.ConversationType.Chat);"), 0);
    await eventsUntil(alice, has('conversationRead:carol:alice'), 'alice onConversationRead');
    // The other device: told through MultiDevicesListener, and its count is 0 too.
    await eventsUntil(carol2, has('cleared:alice:0'), 'carol#2 onConversationEvent CONVERSATION_UNREAD_MESSAGECOUNT_CLEARED');

    // markAllConversationsAsRead and the clear calls: every count back to 0.
    for (const text of ['d', 'e']) await alice.run(`return await ctx.sdk.sendText('carol', ${J(text)});`);
    await carol.until("return ctx.sdk.unreadCountOf('alice', ctx.R.ConversationType.Chat);", (n) => n === 2, 'carol unread 2');
    await carol.run('await ctx.sdk.markEverythingRead();');
    assert.strictEqual(await carol.run('return ctx.sdk.totalUnreadCount();'), 0);
    await alice.run("return await ctx.sdk.sendText('carol', 'f');");
    await carol.until("return ctx.sdk.unreadCountOf('alice', ctx.R.ConversationType.Chat);", (n) => n === 1, 'carol unread 1');
    await carol.run("await ctx.sdk.clearOneConversation('alice');");
    assert.strictEqual(await carol.run("return ctx.sdk.unreadCountOf('alice', ctx.R.ConversationType.Chat);"), 0);
    await alice.run("return await ctx.sdk.sendText('carol', 'g');");
    await carol.until('return ctx.sdk.totalUnreadCount();', (n) => n === 1, 'carol total 1');
    await carol.run('await ctx.sdk.clearAllConversations();');
    assert.strictEqual(await carol.run('return ctx.sdk.totalUnreadCount();'), 0);
    // None of the local clears sent a read ack: alice's last message is not read.
    const last = await alice.run("return ctx.sdk.events.filter((e) => e.startsWith('read:')).length;");
    assert.strictEqual(last, 1, 'only bob\'s message was read-acked');
  }));

test('SDK docs code: group read acks, groupAckCount(), paging with getResult/getNextCursor',
  { skip, timeout: TEST_TIMEOUT }, () => scenario({}, async ({ start }) => {
    const erin = await start('erin');
    const frank = await start('frank');
    const grace = await start('grace');
    const gid = await erin.run("return await ctx.client.groupManager().createGroup('team', ['frank', 'grace']);");
    for (const d of [erin, frank, grace]) await d.run('ctx.sdk.listenForReceipts(false);');

    const sent = await erin.run(`const m = await ctx.sdk.sendGroupText(${J(gid)}, 'group hello'); return m;`);
    const id = J(sent.msgId);
    assert.strictEqual(await erin.run(`return ctx.sdk.groupAckCountOf(ctx.msg(${id}));`), 0);

    for (const [d, ext, count] of [[frank, 'ext-frank', 1], [grace, 'ext-grace', 2]]) {
      await eventsUntil(d, has(`received:${sent.msgId}`), `${d.name} received`);
      await d.run(`await ctx.sdk.readAndAckGroupMessage(${J(gid)}, ctx.msg(${id}), ${J(ext)});`);
      await eventsUntil(erin, has(`groupRead:${sent.msgId}:${d.name}:${count}:${ext}`), `erin onGroupMessageRead from ${d.name}`);
      await erin.until(`return ctx.sdk.groupAckCountOf(ctx.msg(${id}));`, (n) => n === count, `groupAckCount() ${count}`);
    }
    assert.ok((await erin.run('return ctx.sdk.events.slice();')).includes('groupReadUpdated'), 'onReadAckForGroupMessageUpdated');

    // One ack per page, newest first, until the cursor is empty.
    assert.deepStrictEqual(await erin.run(`return await ctx.sdk.fetchAllGroupReadAcks(${id}, 1);`),
      ['grace:2:ext-grace:true:true', 'frank:1:ext-frank:true:true']);
    assert.deepStrictEqual(await erin.run(`return await ctx.sdk.fetchAllGroupReadAcks(${id}, 10);`),
      ['grace:2:ext-grace:true:true', 'frank:1:ext-frank:true:true']);

    // Errors by the SDK's codes and names.
    assert.strictEqual(await erin.run(`return await ctx.sdk.ackGroupError(ctx.msg(${id}));`), 'MESSAGE_INVALID:500:true');
    assert.strictEqual(await erin.run(`return await ctx.sdk.fetchError(${id}, 0);`), 'INVALID_PARAM:110:true');
    // A member removed from the group acking a message it got before: GROUP_NOT_JOINED.
    const second = await erin.run(`const m = await ctx.sdk.sendGroupText(${J(gid)}, 'second'); return m;`);
    await eventsUntil(frank, has(`received:${second.msgId}`), 'frank received the second message');
    await erin.run(`await ctx.client.groupManager().removeMembers(${J(gid)}, ['frank']);`);
    assert.strictEqual(await frank.run(`return await ctx.sdk.ackGroupError(ctx.msg(${J(second.msgId)}));`), 'GROUP_NOT_JOINED:602:true');
  }));

test('SDK docs code: error codes for own messages, read acks switched off, the device limit',
  { skip, timeout: TEST_TIMEOUT }, () => scenario({ configToml: 'max_devices_per_user = 1' }, async ({ server, start }) => {
    const ivan = await start('ivan');
    const judy = await start('judy', { requireReadAck: false });
    for (const d of [ivan, judy]) await d.run('ctx.sdk.listenForReceipts(false);');

    const own = await ivan.run("return await ctx.sdk.sendText('judy', 'mine');");
    assert.strictEqual(await ivan.run(`return await ctx.sdk.ackReadError('judy', ${J(own)});`), 'MESSAGE_INVALID:500:true');
    await eventsUntil(judy, has(`received:${own}`), 'judy received');
    // requireReadAck false: nothing is sent, and the call says the service is off.
    assert.strictEqual(await judy.run(`return await ctx.sdk.ackReadError('ivan', ${J(own)});`), 'SERVICE_NOT_ENABLED:505:true');

    // A second device of ivan (the server allows one): USER_LOGIN_TOO_MANY_DEVICES.
    const ivan2 = await start('ivan', { name: 'ivan#2', login: false });
    const res = await ivan2.run(`
      try { await ctx.client.login('ivan', ${J(server.token('ivan'))}); return 'logged in'; }
      catch (e) { return [e instanceof ctx.R.ChatError, e.errorCode, e.errorCode === ctx.R.ChatError.USER_LOGIN_TOO_MANY_DEVICES]; }`);
    assert.deepStrictEqual(res, [true, 214, true]);
  }));
