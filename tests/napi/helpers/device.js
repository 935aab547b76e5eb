// Main-thread side of a simulated device (helpers/device-worker.js): start, script, wait, close.
// Every wait is bounded.
'use strict';
const { Worker } = require('node:worker_threads');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { repo } = require('./server');

const napiDir = path.join(repo, 'target', 'napi');
const DEFAULT_TIMEOUT = 15000;

const fixtureJsPaths = new Map();
/**
 * An app-code fixture of tests/napi (SeedSnippets.ets: the seed's code blocks as written;
 * SdkDocsCompat.ets: code written from the SDK's docs), both checked by the ArkTS lint, transpiled
 * to CommonJS once per process, its HAR import pointed at target/napi.
 */
function fixtureJs(name) {
  if (fixtureJsPaths.has(name)) return fixtureJsPaths.get(name);
  const ts = require(path.join(repo, 'scripts', 'node_modules', 'ohos-typescript'));
  const src = fs.readFileSync(path.join(repo, 'tests', 'napi', `${name}.ets`), 'utf8');
  const out = ts.transpileModule(src, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2021 },
    fileName: `${name}.ts`,
  });
  const js = out.outputText.split('require("../../ohos/receipt/Index")').join(`require(${JSON.stringify(napiDir)})`);
  if (!js.includes(JSON.stringify(napiDir))) throw new Error(`${name}: HAR import not found`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'receipt-fixture-'));
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, `${name}.js`);
  fs.writeFileSync(file, js);
  fixtureJsPaths.set(name, file);
  return file;
}

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, reject) => { t = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(t));
}

class Device {
  /**
   * Starts a worker that inits the API against `server` and (unless login: false) logs in as `user`.
   * opts: { login, token, requireDeliveryAck, requireReadAck, privateReadReceipts, name, filesDir (reuse a device's
   * store: an app restart), tlsCaPem, port (e.g. a proxy's), messageCacheSize, messageRetentionAge,
   * messageRetentionCount (the ChatOptions history settings) }
   */
  static async start(server, user, opts = {}) {
    const filesDir = opts.filesDir || fs.mkdtempSync(path.join(os.tmpdir(), `receipt-dev-${user}-`));
    const login = opts.login !== false;
    const d = new Device(opts.name || user, filesDir);
    d.worker = new Worker(path.join(__dirname, 'device-worker.js'), {
      workerData: {
        napiDir, seedJs: fixtureJs('SeedSnippets'), sdkJs: fixtureJs('SdkDocsCompat'), filesDir, host: server.host, port: opts.port || server.port, tlsCaPem: opts.tlsCaPem,
        user: login ? user : undefined, token: login ? (opts.token ?? server.token(user)) : undefined,
        requireDeliveryAck: opts.requireDeliveryAck, requireReadAck: opts.requireReadAck,
        privateReadReceipts: opts.privateReadReceipts,
        messageCacheSize: opts.messageCacheSize, messageRetentionAge: opts.messageRetentionAge,
        messageRetentionCount: opts.messageRetentionCount,
      },
    });
    d.attach();
    try {
      await withTimeout(d.ready, opts.timeout || DEFAULT_TIMEOUT, `device ${d.name} ready`);
    } catch (e) {
      await d.close();
      throw e;
    }
    return d;
  }

  constructor(name, filesDir) {
    this.name = name;
    this.filesDir = filesDir;
    this.records = [];
    this.pending = new Map();
    this.nextId = 1;
    this.waiters = [];
    this.exited = false;
    this.exitCode = undefined;
  }

  attach() {
    this.exitP = new Promise((resolve) => {
      this.worker.once('exit', (code) => {
        this.exited = true;
        this.exitCode = code;
        for (const { reject } of this.pending.values()) reject(new Error(`device ${this.name} exited (${code})`));
        this.pending.clear();
        this.readyReject?.(new Error(`device ${this.name} exited (${code}) before ready`));
        resolve(code);
      });
    });
    this.ready = new Promise((resolve, reject) => {
      this.readyReject = reject;
      this.worker.on('message', (m) => {
        if (m.type === 'ready') {
          this.threadId = m.threadId;
          resolve();
        } else if (m.type === 'fatal') {
          reject(Object.assign(new Error(`device ${this.name}: ${JSON.stringify(m.error)}`), { detail: m.error }));
        } else if (m.type === 'result') {
          const p = this.pending.get(m.id);
          if (!p) return;
          this.pending.delete(m.id);
          if (m.ok) p.resolve(m.value);
          else p.reject(Object.assign(new Error(`device ${this.name}: ${JSON.stringify(m.error)}`), m.error || {}));
        } else if (m.type === 'record') {
          this.records.push(m.rec);
          for (const w of this.waiters.slice()) {
            if (w.pred(m.rec)) {
              this.waiters.splice(this.waiters.indexOf(w), 1);
              w.resolve(m.rec);
            }
          }
        }
      });
      this.worker.on('error', (e) => {
        reject(e);
        for (const { reject: rj } of this.pending.values()) rj(e);
        this.pending.clear();
      });
    });
    this.ready.catch(() => {});
  }

  /** Runs `code` (the body of an async function of `ctx`) in the worker; its value, cloned. */
  run(code, timeout = DEFAULT_TIMEOUT) {
    if (this.exited) return Promise.reject(new Error(`device ${this.name} has exited`));
    const id = this.nextId++;
    const p = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    this.worker.postMessage({ type: 'run', id, code });
    return withTimeout(p, timeout, `device ${this.name} run: ${code.slice(0, 120)}`).finally(() => this.pending.delete(id));
  }

  /** The first record (listener callback) matching `pred`, past or future. */
  waitFor(pred, what, timeout = DEFAULT_TIMEOUT) {
    const hit = this.records.find(pred);
    if (hit) return Promise.resolve(hit);
    let w;
    const p = new Promise((resolve) => { w = { pred, resolve }; this.waiters.push(w); });
    return withTimeout(p, timeout, `device ${this.name} waiting for ${what}`).finally(() => {
      const i = this.waiters.indexOf(w);
      if (i >= 0) this.waiters.splice(i, 1);
    });
  }

  /** Records of one listener / callback name. */
  calls(listener, cb) {
    return this.records.filter((r) => r.listener === listener && (cb === undefined || r.cb === cb));
  }

  /** Polls `code` in the worker until `check(value)` is true. */
  async until(code, check, what, timeout = DEFAULT_TIMEOUT) {
    const deadline = Date.now() + timeout;
    let last;
    for (;;) {
      last = await this.run(code, Math.max(1000, deadline - Date.now()));
      if (check(last)) return last;
      if (Date.now() > deadline) throw new Error(`device ${this.name}: ${what} not reached; last value ${JSON.stringify(last)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Closes the port: the worker is expected to exit by itself. Resolves with its exit code. */
  finish(timeout = DEFAULT_TIMEOUT) {
    if (!this.exited) this.worker.postMessage({ type: 'finish' });
    return withTimeout(this.exitP, timeout, `device ${this.name} exiting by itself`);
  }

  /** Terminates the worker (bounded) and removes its files. */
  async close() {
    if (this.worker && !this.exited) {
      await withTimeout(this.worker.terminate(), 10000, `terminating ${this.name}`).catch(() => {});
    }
    fs.rmSync(this.filesDir, { recursive: true, force: true });
  }
}

module.exports = { Device, napiDir, withTimeout };
