// What the interoperability suites share: a TCP port on loopback, a test CA and a `localhost`
// leaf made with openssl, Herald's environment, and `herald serve` started and stopped as a
// process of its own.

import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

export const HERALD = resolve(process.env.HERALD_BIN ?? new URL('../target/debug/herald', import.meta.url).pathname);

/** Listens on 127.0.0.1 on a free port; answers the port. */
export function listen(server) {
  return new Promise((done) => server.listen(0, '127.0.0.1', () => done(server.address().port)));
}

/** A CA and a leaf for `localhost` (CA:FALSE, as rustls wants), made with openssl in `dir`. */
export function certificates(dir, name = 'Interop CA') {
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'leaf.key', '-out', 'leaf.csr', '-subj', '/CN=localhost');
  writeFileSync(join(dir, 'leaf.ext'), 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n');
  run('x509', '-req', '-in', 'leaf.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'leaf.pem', '-days', '2', '-extfile', 'leaf.ext');
  return { key: readFileSync(join(dir, 'leaf.key')), cert: readFileSync(join(dir, 'leaf.pem')), ca: join(dir, 'ca.pem') };
}

/** Herald's environment for a test: the caller's, without its HERALD_* settings, plus `extra`. */
export function heraldEnv(dir, extra = {}) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HERALD_')));
  return { ...env, HERALD_DATA_DIR: join(dir, 'herald'), HERALD_DEV: 'true', HERALD_LOG: 'warn', ...extra };
}

/** Starts `herald serve` on a free port; answers the process and its base URL. */
export async function startHerald(env) {
  const process = spawn(HERALD, ['serve'], { env: { ...env, HERALD_LISTEN: '127.0.0.1:0' }, stdio: ['ignore', 'pipe', 'inherit'] });
  const base = await new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error('herald serve printed nothing within 30 s')), 30_000);
    createInterface({ input: process.stdout }).on('line', (line) => {
      const match = line.match(/^Herald is listening on (http:\/\/[^ ]+)/);
      if (match) {
        clearTimeout(timer);
        done(match[1]);
      }
    });
  });
  return { process, base };
}

/** Stops a process started by a test, with SIGTERM, and waits for it. */
export async function stop(child) {
  if (child && child.exitCode === null) {
    const exited = new Promise((done) => child.once('exit', done));
    child.kill('SIGTERM');
    await exited;
  }
}

/** A browser's memory of cookies across requests that follow no redirect by themselves. */
export function cookieSession() {
  const jar = new Map();
  return async (url, options = {}) => {
    const headers = { ...(options.headers ?? {}), cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') };
    const response = await fetch(url, { ...options, headers, redirect: 'manual' });
    for (const cookie of response.headers.getSetCookie()) {
      const [pair] = cookie.split(';');
      const at = pair.indexOf('=');
      jar.set(pair.slice(0, at), pair.slice(at + 1));
    }
    return response;
  };
}

/** A page's first form: its action and its inputs' names and values. */
export function formOf(html) {
  const action = html.match(/<form[^>]*action="([^"]+)"/)?.[1];
  const fields = new URLSearchParams();
  for (const [, name, value] of html.matchAll(/<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"/g)) fields.set(name, value);
  return { action, fields };
}

/** Posts a form's fields, as a browser submits it. */
export function submit(request, url, fields) {
  return request(url, {
    method: 'POST',
    body: fields,
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
}
