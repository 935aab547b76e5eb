// Large groups (issue 16 item 3) through the ArkTS API, the NAPI shim and the C ABI, against a
// real receipt-server that coalesces the acks of groups above 2 members: the sender hears
// onReadAckForGroupMessageUpdated with the message's groupAckCount() risen, never
// onGroupMessageRead per ack; the readers' acks are stored (the list pages complete).
// Needs: scripts/build-napi.sh. Run: node --test tests/napi/
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
const TEST_TIMEOUT = 90000;
const isCb = (listener, cb, pred = () => true) => (r) => r.listener === listener && r.cb === cb && pred(r);

test('large group: coalesced count updates reach onReadAckForGroupMessageUpdated and groupAckCount()',
  { skip, timeout: TEST_TIMEOUT }, async () => {
    const server = await startServer({ extraArgs: ['--coalesce-above', '2', '--coalesce-ms', '200'] });
    const devices = [];
    try {
      const start = async (user) => {
        const d = await Device.start(server, user);
        devices.push(d);
        return d;
      };
      const erin = await start('erin');
      const readers = [await start('frank'), await start('grace'), await start('heidi')];
      const gid = await erin.run("return await ctx.client.groupManager().createGroup('big', ['frank', 'grace', 'heidi']);");
      const sent = await erin.run(`
        const m = ctx.R.ChatMessage.createTextSendMessage(${JSON.stringify(gid)}, 'all hands');
        m.setChatType(ctx.R.ChatType.GroupChat);
        m.setIsNeedGroupAck(true);
        await ctx.cm().sendMessage(m);
        return m;`);
      assert.strictEqual(sent.needGroupAck, true);
      const id = JSON.stringify(sent.msgId);
      for (const d of readers) {
        await d.waitFor(isCb('probe', 'onMessageReceived', (r) => r.args[0].some((m) => m.msgId === sent.msgId)), `${d.name} received`);
        await d.run(`await ctx.cm().ackGroupMessageRead(ctx.msg(${id}), 'seen');`);
      }
      // The count reaches 3 through coalesced updates (bounded wait: the server flushes every 200 ms).
      await erin.until(`return ctx.msg(${id}).groupAckCount();`, (n) => n === 3, 'erin groupAckCount() 3');
      assert.ok(erin.calls('probe', 'onReadAckForGroupMessageUpdated').length >= 1, 'onReadAckForGroupMessageUpdated heard');
      assert.strictEqual(erin.calls('probe', 'onGroupMessageRead').length, 0, 'no per-ack onGroupMessageRead above the threshold');
      const all = await erin.run(`const r = await ctx.cm().fetchGroupReadAcks(${id}, 10); return r;`);
      assert.deepStrictEqual(all.data.map((a) => a.from).sort(), ['frank', 'grace', 'heidi']);
    } finally {
      await Promise.all(devices.map((d) => d.close()));
      await server.stop();
    }
  });
