// What the ArkTS API tests share: whether they can run, one test's server and devices (stopped
// at the end, pass or fail), and predicates on the calls a device's listeners recorded.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { startServer, serverBinary } = require('./server');
const { Device, napiDir } = require('./device');

const ready = fs.existsSync(path.join(napiDir, 'libreceipt_napi.node')) && fs.existsSync(path.join(napiDir, 'index.js'));
/** A test's `skip` option: the reason it cannot run, or false. */
const skip = !ready ? 'target/napi not built (scripts/build-napi.sh)'
  : !serverBinary() ? 'receipt-server not built (scripts/build-napi.sh)' : false;

/**
 * Runs `fn({ server, start })` against a fresh server (`startServer(serverOpts)`); `start(user,
 * opts)` starts a device. `check(device)` runs on every device once `fn` passed. Everything is
 * stopped at the end. `serverOpts` may be left out: `scenario(fn[, check])`.
 */
async function scenario(serverOpts, fn, check) {
  if (typeof serverOpts === 'function') {
    [serverOpts, fn, check] = [undefined, serverOpts, fn];
  }
  const server = await startServer(serverOpts);
  const devices = [];
  const start = async (user, opts) => {
    const d = await Device.start(server, user, opts);
    devices.push(d);
    return d;
  };
  try {
    await fn({ server, start });
    if (check) for (const d of devices) check(d);
  } finally {
    await Promise.all(devices.map((d) => d.close()));
    await server.stop();
  }
}

/** A recorded call whose first argument (a message array) holds message `id`. */
const hasMsg = (id) => (r) => Array.isArray(r.args[0]) && r.args[0].some((m) => m.msgId === id);
/** A recorded call of `listener`.`cb` that `pred` accepts. */
const isCb = (listener, cb, pred = () => true) => (r) => r.listener === listener && r.cb === cb && pred(r);

module.exports = { skip, scenario, hasMsg, isCb };
