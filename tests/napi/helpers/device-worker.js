// One device = one worker_threads worker: the ArkTS API (target/napi) is a per-process singleton,
// as on HarmonyOS, so each simulated device gets its own JS env (and its own native client).
//
// Protocol with the main thread (helpers/device.js):
//   main -> worker  { type: 'run', id, code }   runs `code` as the body of an async function of `ctx`
//                   { type: 'finish' }          closes the port: the worker must then exit by itself
//   worker -> main  { type: 'ready', threadId } | { type: 'fatal', error }
//                   { type: 'result', id, ok, value | error }
//                   { type: 'record', rec }     a listener callback ran (or a spied call settled)
'use strict';
const { parentPort, workerData, threadId, isMainThread } = require('node:worker_threads');

if (isMainThread) throw new Error('device-worker.js runs in a worker');

// Thread-local marker: a listener that runs on this worker's JS thread sees it.
globalThis.__receiptDeviceThread = threadId;

const R = require(workerData.napiDir);
const SeedSnippets = workerData.seedJs ? require(workerData.seedJs).SeedSnippets : undefined;
const SdkDocsCompat = workerData.sdkJs ? require(workerData.sdkJs).SdkDocsCompat : undefined;

let seq = 0;
let callbackDepth = 0;

function plain(v, depth = 0) {
  if (depth > 6) return '[deep]';
  if (v === undefined || v === null || typeof v !== 'object') return v;
  if (v instanceof R.ChatMessage) {
    return {
      msgId: v.getMsgId(), clientId: v.getClientId(), from: v.getFrom(), to: v.getTo(), chatType: v.getChatType(),
      direction: v.getDirection(), content: v.getContent(), delivered: v.isDelivered(), receiverRead: v.isReceiverRead(),
      unread: v.isUnread(), needGroupAck: v.isNeedGroupAck(), groupAckCount: v.groupAckCount(),
      groupAckSent: v.isGroupAckSent(), status: v.getStatus(), serverTime: v.getServerTime(),
      needGroupDeliveryAck: v.isNeedGroupDeliveryAck(), groupDeliveredCount: v.groupDeliveredCount(),
    };
  }
  if (v instanceof R.ChatError) return { chatError: true, code: v.errorCode, description: v.description };
  if (v instanceof R.CursorResult) return { data: plain(v.getData(), depth + 1), cursor: v.getCursor() };
  if (Array.isArray(v)) return v.map((x) => plain(x, depth + 1));
  if (v instanceof Error) return { error: true, name: v.name, message: v.message, code: v.code };
  const out = {};
  for (const k of Object.keys(v)) out[k] = plain(v[k], depth + 1);
  return out;
}

const state = {
  messages: new Map(),   // msgId -> ChatMessage (every message object a callback or a send handed out)
  lastCreated: undefined, // the last ChatMessage.createTextSendMessage result
  nextTag: undefined,    // tag for the next listener added (which seed block added it)
  listeners: new Map(),  // tag -> listener object (as added)
};

function remember(v) {
  if (v instanceof R.ChatMessage) state.messages.set(v.getMsgId(), v);
  else if (Array.isArray(v)) v.forEach(remember);
}

function record(listener, cb, args) {
  args.forEach(remember);
  parentPort.postMessage({
    type: 'record',
    rec: {
      seq: ++seq, listener, cb, args: plain(args), threadId,
      marker: globalThis.__receiptDeviceThread === threadId, isMainThread,
      // how the callback was reached: from the native event (0) or nested in another one
      depth: callbackDepth,
    },
  });
}

// ---- spies (test setup; the seed's code runs unchanged) ---------------------------------------
const CALLBACKS = ['onMessageReceived', 'onMessageDelivered', 'onMessageRead', 'onGroupMessageRead',
  'onReadAckForGroupMessageUpdated', 'onGroupMessageDelivered', 'onConversationRead', 'onConversationUpdate', 'onUnreadCountChanged'];
const wrapped = new WeakSet();

function instrument(listener) {
  if (listener === null || typeof listener !== 'object' || wrapped.has(listener)) return;
  wrapped.add(listener);
  const tag = state.nextTag || `listener${state.listeners.size + 1}`;
  state.listeners.set(tag, listener);
  for (const name of CALLBACKS) {
    const orig = listener[name];
    if (typeof orig !== 'function') continue;
    // In place, so the listener object keeps its identity (removeMessageListener compares it).
    listener[name] = function (...args) {
      record(tag, name, args);
      callbackDepth++;
      try {
        return orig.apply(this, args);
      } finally {
        callbackDepth--;
      }
    };
  }
}

const CM = R.ChatManager.prototype;
for (const m of ['addMessageListener', 'addConversationListener']) {
  const orig = CM[m];
  CM[m] = function (listener) {
    instrument(listener);
    return orig.call(this, listener);
  };
}
// Outcomes of the calls the seed makes fire-and-forget.
for (const m of ['ackMessageRead', 'ackConversationRead', 'ackGroupMessageRead', 'fetchGroupReadAcks', 'sendMessage']) {
  const orig = CM[m];
  CM[m] = function (...args) {
    const p = orig.apply(this, args);
    p.then((v) => { remember(v); record('call', `${m}:ok`, [v, ...args]); },
      (e) => record('call', `${m}:error`, [e, ...args]));
    return p;
  };
}
const origCreate = R.ChatMessage.createTextSendMessage;
R.ChatMessage.createTextSendMessage = function (...args) {
  const m = origCreate.apply(this, args);
  state.lastCreated = m;
  return m;
};

// ---- setup: init (and login) as an app does ---------------------------------------------------
const client = R.ChatClient.getInstance();
const options = new R.ChatOptions();
options.setIMServer(workerData.host);
options.setImPort(workerData.port);
if (workerData.requireDeliveryAck !== undefined) options.setRequireDeliveryAck(workerData.requireDeliveryAck);
if (workerData.requireReadAck !== undefined) options.setRequireReadAck(workerData.requireReadAck);
if (workerData.privateReadReceipts !== undefined) options.setPrivateReadReceipts(workerData.privateReadReceipts);
if (workerData.tlsCaPem !== undefined) options.setTlsCaPem(workerData.tlsCaPem);
if (workerData.messageCacheSize !== undefined) options.setMessageCacheSize(workerData.messageCacheSize);
if (workerData.messageRetentionAge !== undefined) options.setMessageRetentionAge(workerData.messageRetentionAge);
if (workerData.messageRetentionCount !== undefined) options.setMessageRetentionCount(workerData.messageRetentionCount);

const seed = SeedSnippets ? new SeedSnippets() : undefined;
const sdk = SdkDocsCompat ? new SdkDocsCompat() : undefined;
const ctx = {
  R, client, options, seed, sdk, state, plain, record, threadId, require,
  cm: () => client.chatManager(),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
  msg: (id) => {
    const m = state.messages.get(id);
    if (!m) throw new Error(`no message ${id} on this device`);
    return m;
  },
  /** Runs `f` with the tag given to the listeners it adds. */
  tagged: (tag, f) => {
    state.nextTag = tag;
    try {
      return f();
    } finally {
      state.nextTag = undefined;
    }
  },
};

const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;

parentPort.on('message', async (msg) => {
  if (msg.type === 'finish') {
    parentPort.close();
    return;
  }
  if (msg.type !== 'run') return;
  try {
    const f = new AsyncFunction('ctx', msg.code);
    const value = await f(ctx);
    remember(value);
    parentPort.postMessage({ type: 'result', id: msg.id, ok: true, value: plain(value) });
  } catch (e) {
    parentPort.postMessage({ type: 'result', id: msg.id, ok: false, error: plain(e) });
  }
});

(async () => {
  try {
    client.init({ filesDir: workerData.filesDir }, options);
    // The probe hears everything this device gets (added before login: backlog included).
    ctx.tagged('probe', () => {
      const probe = {};
      for (const name of CALLBACKS) probe[name] = () => {};
      client.chatManager().addMessageListener(probe);
      client.chatManager().addConversationListener(probe);
    });
    client.addConnectionListener({
      onConnected: () => record('connection', 'onConnected', []),
      onDisconnected: (code, description) => record('connection', 'onDisconnected', [code, description]),
      onDatabaseOpened: (username) => record('connection', 'onDatabaseOpened', [username]),
      onOfflineMessageSyncStart: () => record('connection', 'onOfflineMessageSyncStart', []),
      onOfflineMessageSyncFinish: () => record('connection', 'onOfflineMessageSyncFinish', []),
      onTokenWillExpire: () => record('connection', 'onTokenWillExpire', []),
      onTokenExpired: () => record('connection', 'onTokenExpired', []),
      onLogout: (code, info) => record('connection', 'onLogout', [code, info]),
    });
    if (workerData.user && workerData.token !== undefined) {
      await client.login(workerData.user, workerData.token);
    }
    parentPort.postMessage({ type: 'ready', threadId });
  } catch (e) {
    parentPort.postMessage({ type: 'fatal', error: plain(e) });
  }
})();
