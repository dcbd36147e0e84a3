// Run the prebuilt example server (target/debug/examples/axum_server) on
// 127.0.0.1 for integration tests, and sign HS256 tokens for it.
import { execFile, spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:net';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The example server binary, built by `cargo build --examples`. */
export const SERVER_BIN = fileURLToPath(new URL('../../target/debug/examples/axum_server', import.meta.url));

export const hasServer = () => existsSync(SERVER_BIN);
/** The todo example (typed and materialized todo model). */
export const TODO_BIN = fileURLToPath(new URL('../../target/debug/examples/todo', import.meta.url));

/** The operator's command line, built by `cargo build -p better-sync-admin`. */
export const ADMIN_BIN = fileURLToPath(new URL('../../target/debug/better-sync-admin', import.meta.url));

export const hasAdmin = () => existsSync(ADMIN_BIN);

/**
 * Run `better-sync-admin` on a SQLite file; resolves with its JSON report.
 * @param {string} dbPath
 * @param {string[]} args the command and its options, e.g. ['compact', '--keep-last', '3']
 */
export function admin(dbPath, args) {
  return new Promise((resolve, reject) => {
    execFile(ADMIN_BIN, ['--database-url', `sqlite://${dbPath}`, ...args], (error, stdout, stderr) => {
      if (error) reject(new Error(`better-sync-admin ${args.join(' ')}: ${stderr || error.message}`));
      else resolve(JSON.parse(stdout));
    });
  });
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (srv.address());
      srv.close(() => resolve(port));
    });
  });
}

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 JWT with the given claims (sub, tenant, exp...). */
export function signToken(secret, claims) {
  const head = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/**
 * Start the server; resolves once it listens.
 * @param {{ port: number, dbPath: string, secret: string, leewaySecs?: number, bin?: string, ready?: string }} options
 *   `bin`: another example server (default the axum one); `ready`: what it prints once it listens
 * @returns {Promise<{ baseUrl: string, stop: () => Promise<void>, output: () => string }>}
 */
export function startServer({ port, dbPath, secret, leewaySecs, bin = SERVER_BIN, ready = 'listening on' }) {
  const child = spawn(bin, [], {
    env: { ...process.env, BIND: `127.0.0.1:${port}`, JWT_SECRET: secret, DATABASE_URL: `sqlite://${dbPath}?mode=rwc`, RUST_LOG: 'warn', ...(leewaySecs === undefined ? {} : { JWT_LEEWAY_SECS: String(leewaySecs) }) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`server did not start within 60 s:\n${output}`));
    }, 60_000);
    const onData = (chunk) => {
      output += chunk;
      if (output.includes(ready)) {
        clearTimeout(timer);
        resolve({ baseUrl: `http://127.0.0.1:${port}`, stop, output: () => output });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${output}`));
    });
  });
}
