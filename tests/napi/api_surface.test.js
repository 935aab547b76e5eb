// ArkTS API surface under Node, against the real NAPI shim, no server needed.
// Needs: node scripts/build-napi-js.js (target/napi/*.js) and the shim built as
// target/napi/libreceipt_napi.node. Skips when the addon is not built yet.
// Run: node --test tests/napi/
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const napiDir = path.resolve(__dirname, '..', '..', 'target', 'napi');
const ready = fs.existsSync(path.join(napiDir, 'libreceipt_napi.node')) && fs.existsSync(path.join(napiDir, 'index.js'));
const skip = ready ? false : 'target/napi not built (scripts/build-napi-js.js + the NAPI shim)';

const isChatError = (R, code) => (e) => e instanceof R.ChatError && e.code === code && typeof e.description === 'string';

test('exports, options defaults, validation before and after init', { skip }, async () => {
  const R = require(napiDir);
  for (const k of ['ChatClient', 'ChatOptions', 'ChatManager', 'ChatMessage', 'ChatType', 'MessageDirection',
    'ChatError', 'GroupReadAck', 'CursorResult', 'Conversation', 'GroupManager']) {
    assert.ok(R[k] !== undefined, `export ${k}`);
  }
  assert.deepStrictEqual([R.ChatType.Chat, R.ChatType.GroupChat, R.ChatType.ChatRoom], [0, 1, 2]);
  assert.deepStrictEqual([R.MessageDirection.SEND, R.MessageDirection.RECEIVE], [0, 1]);

  const o = new R.ChatOptions();
  assert.strictEqual(o.getRequireDeliveryAck(), false);
  assert.strictEqual(o.getRequireReadAck(), true);
  // No default server address: on a phone 127.0.0.1 is the phone itself.
  assert.strictEqual(o.getIMServer(), '');
  assert.strictEqual(o.getImPort(), 0);
  assert.strictEqual(o.hasServerAddress(), false);
  // The SDK's constructor forms.
  assert.strictEqual(new R.ChatOptions({ appKey: 'org#app' }).getAppKey(), 'org#app');
  assert.strictEqual(new R.ChatOptions('org#old').getAppKey(), 'org#old');
  assert.throws(() => new R.ChatOptions({ appKey: 7 }), isChatError(R, 110));
  assert.throws(() => o.setRequireReadAck('yes'), isChatError(R, 110));
  assert.throws(() => o.setImPort(70000), isChatError(R, 110));

  assert.strictEqual(R.ChatMessage.createTextSendMessage('', 'x'), undefined);
  const m = R.ChatMessage.createTextSendMessage('bob', 'hi');
  assert.strictEqual(m.getTo(), 'bob');
  assert.strictEqual(m.getDirection(), R.MessageDirection.SEND);
  assert.strictEqual(m.getChatType(), R.ChatType.Chat);
  assert.throws(() => m.setChatType(7), isChatError(R, 110));
  m.setChatType(R.ChatType.GroupChat);
  m.setIsNeedGroupAck(true);
  assert.ok(m.isNeedGroupAck());
  assert.strictEqual(m.groupAckCount(), 0);

  const client = R.ChatClient.getInstance();
  assert.strictEqual(client, R.ChatClient.getInstance());
  assert.strictEqual(client.chatManager(), undefined);
  assert.throws(() => client.init({}, o), isChatError(R, 110));
  const filesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'receipt-napi-'));
  process.once('exit', () => fs.rmSync(filesDir, { recursive: true, force: true }));
  client.init({ filesDir }, o);
  const cm = client.chatManager();
  assert.ok(cm instanceof R.ChatManager);

  await assert.rejects(client.login(42, 't'), isChatError(R, 110));
  // No server address set: login says so (300).
  await assert.rejects(client.login('alice', 't'),
    (e) => isChatError(R, 300)(e) && e.errorCode === 300 && /setIMServer/.test(e.description));
  await assert.rejects(cm.ackMessageRead(42), isChatError(R, 110));
  await assert.rejects(cm.ackGroupMessageRead({}, 'x'), isChatError(R, 110));
  await assert.rejects(cm.fetchGroupReadAcks('m1', 'ten'), isChatError(R, 110));
  await assert.rejects(cm.sendMessage('not a message'), isChatError(R, 110));
  assert.throws(() => cm.getConversation(''), isChatError(R, 110));
  // Not logged in: the native side answers 201.
  await assert.rejects(cm.sendMessage(R.ChatMessage.createTextSendMessage('bob', 'hi')), isChatError(R, 201));
  // A conversation nobody has seen: undefined unless asked to create it.
  assert.strictEqual(cm.getConversation('nobody', R.ConversationType.Chat, false), undefined);
  assert.strictEqual(cm.getConversation('nobody', R.ConversationType.Chat, true).getType(), R.ConversationType.Chat);
});
