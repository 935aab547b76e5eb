// Test helper: a real receipt-server on 127.0.0.1:<ephemeral port> with a temporary data
// directory and group read acks enabled; tokens (HS256 JWTs) minted with `receipt-server token`.
// No token leeway: a test's token expires at the second it names.
'use strict';
const { spawn, spawnSync, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const repo = path.resolve(__dirname, '..', '..', '..');

/** The receipt-server binary: release (built by scripts/build-napi.sh) first, else debug. */
function serverBinary() {
  const candidates = [];
  if (process.env.RECEIPT_SERVER_BIN) candidates.push(process.env.RECEIPT_SERVER_BIN);
  const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(process.env.CARGO_TARGET_DIR) : path.join(repo, 'target');
  candidates.push(path.join(targetDir, 'release', 'receipt-server'), path.join(targetDir, 'debug', 'receipt-server'));
  for (const c of candidates) {
    if (fs.existsSync(c)) return c;
  }
  return undefined;
}

/**
 * Starts a server. Resolves with { host, port, secret, dataDir, token(user), kill(), restart(),
 * stop() } once it printed `listening on <addr>`; rejects after `timeoutMs`.
 * `configToml`: settings without a flag (e.g. "max_devices_per_user = 1"), passed with --config.
 * kill(): stops the process, keeps the data; restart(): same port, data and secret; stop(): kills
 * it and removes the data directory.
 */
async function startServer({ timeoutMs = 20000, extraArgs = [], configToml } = {}) {
  const bin = serverBinary();
  if (!bin) throw new Error('receipt-server not built (scripts/build-napi.sh builds it)');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'receipt-server-'));
  if (configToml !== undefined) {
    // In the data dir (removed by stop()); the store opens only its own file there.
    const file = path.join(dataDir, 'test-config.toml');
    fs.writeFileSync(file, `${configToml}\n`);
    extraArgs = ['--config', file, ...extraArgs];
  }
  const secret = `test-secret-${process.pid}-${Date.now()}`;
  const server = {
    host: '127.0.0.1', port: 0, secret, dataDir, proc: undefined,
    token: (user, ttl = 3600) =>
      execFileSync(bin, ['token', '--user', user, '--secret', secret, '--ttl', String(ttl)], { encoding: 'utf8', timeout: 10000 }).trim(),
    kill: async () => {
      if (server.proc) await server.proc.kill();
      server.proc = undefined;
    },
    restart: async () => {
      await server.kill();
      server.proc = await spawnServer(bin, `127.0.0.1:${server.port}`, dataDir, secret, extraArgs, timeoutMs);
    },
    stop: async () => {
      await server.kill();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
    stderr: () => (server.proc ? server.proc.stderr() : ''),
  };
  try {
    server.proc = await spawnServer(bin, '127.0.0.1:0', dataDir, secret, extraArgs, timeoutMs);
  } catch (e) {
    fs.rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
  server.host = server.proc.host;
  server.port = server.proc.port;
  return server;
}

function spawnServer(bin, addr, dataDir, secret, extraArgs, timeoutMs) {
  const args = ['serve', '--addr', addr, '--data-dir', dataDir, '--secret', secret, '--group-ack-enabled', 'true',
    '--token-leeway-secs', '0', ...extraArgs];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d.toString();
    if (stderr.length > 20000) stderr = stderr.slice(-20000);
  });
  let exited = false;
  const exitedP = new Promise((resolve) => child.once('exit', (code, signal) => { exited = true; resolve({ code, signal }); }));
  const kill = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      const t = setTimeout(() => { if (!exited) child.kill('SIGKILL'); }, 5000);
      await exitedP;
      clearTimeout(t);
    }
  };
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    const timer = setTimeout(() => {
      rl.close();
      kill().finally(() => reject(new Error(`receipt-server did not start in ${timeoutMs} ms; stderr:\n${stderr}`)));
    }, timeoutMs);
    exitedP.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`receipt-server exited (${code ?? signal}) before listening; stderr:\n${stderr}`));
    });
    rl.once('line', (line) => {
      clearTimeout(timer);
      rl.close();
      child.stdout.resume(); // keep draining
      const m = /^listening on (.+):(\d+)\s*$/.exec(line);
      if (!m) {
        kill().finally(() => reject(new Error(`unexpected first line from receipt-server: ${line}`)));
        return;
      }
      resolve({ host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]), kill, stderr: () => stderr });
    });
  });
}

/**
 * A throwaway CA and a server certificate for 127.0.0.1 / localhost (openssl, P-256), in `dir`:
 * { ca: <CA PEM text>, cert: <server cert path>, key: <server key path> }.
 */
function makeTestCa(dir) {
  const run = (args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe', timeout: 20000 });
  run(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem',
    '-days', '1', '-subj', '/CN=receipt napi test CA']);
  run(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key', '-out', 'server.csr',
    '-subj', '/CN=127.0.0.1']);
  fs.writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n');
  run(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem',
    '-days', '1', '-extfile', 'ext.cnf']);
  return { ca: fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server.key') };
}

/** Runs `script` in a fresh Node process (bounded): { status, stdout, stderr }. */
function runNode(script, timeoutMs = 30000) {
  return spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: timeoutMs });
}

module.exports = { startServer, serverBinary, repo, makeTestCa, runNode };
