// Authentication in a real browser. Starts its own jobcast with API keys,
// a ticket secret and one allowed CORS origin, behind a TCP relay that the
// test can cut (so that the server "drops" every connection without
// losing its jobs), and serves test pages from three origins of their own:
// - an allowed origin, whose page logs in with a key (POST /v1/session
//   with credentials), starts a job with only the session cookie, follows
//   it with `new EventSource(url, {withCredentials: true})` to its end,
//   resuming after the relay cuts the connection;
// - the same origin, whose page only opens a job's `stream_url`;
// - an origin that is not allowed, whose page is refused at every step;
// and the dashboard itself, which asks for a key once and shows owners.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { after, before, describe, test } = require('node:test');
const h = require('./helpers');

const ALICE_KEY = 'jck_browser_alice_0123456789abcdef';
const BOB_KEY = 'jck_browser_bob_0123456789abcdef0';
const sha256 = (text) => crypto.createHash('sha256').update(text).digest('hex');

/** A TCP relay to `target` whose connections can all be cut at once. */
async function startRelay(targetPort) {
  const sockets = new Set();
  const resumes = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => socket.destroy());
    }
    client.on('data', (chunk) => {
      const match = /\r\nlast-event-id: *(\d+)/i.exec(chunk.toString('latin1'));
      if (match) resumes.push(Number(match[1]));
    });
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    resumes,
    cut() { for (const socket of sockets) socket.destroy(); },
    close() { this.cut(); server.close(); },
  };
}

/** A web server of one page, `page.html`, on its own origin. */
async function startPageServer() {
  const server = http.createServer((request, response) => {
    response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    response.end('<!doctype html><title>a page of another origin</title><p>test page</p>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { origin: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

describe('authentication in the browser', { skip: !process.env.JOBCAST_TEST_BIN && 'needs ui/run-tests.sh' }, () => {
  let server;
  let relay;
  let api;
  let allowed;
  let stranger;
  let browser;

  before(async () => {
    fs.mkdirSync(h.OUTPUT_DIR, { recursive: true });
    const keys = path.join(h.OUTPUT_DIR, 'keys.toml');
    fs.writeFileSync(keys, [
      `[[key]]\nsubject = "alice"\nrole = "user"\nsha256 = "${sha256(ALICE_KEY)}"\n`,
      `[[key]]\nsubject = "bob"\nrole = "user"\nsha256 = "${sha256(BOB_KEY)}"\n`,
    ].join('\n'));
    allowed = await startPageServer();
    stranger = await startPageServer();
    const port = await h.freePort();
    const log = fs.openSync(path.join(h.OUTPUT_DIR, 'auth-server.log'), 'a');
    server = spawn(process.env.JOBCAST_TEST_BIN, [
      '--listen', `127.0.0.1:${port}`, '--store', 'memory', '--auth-keys', keys,
      '--ticket-secret', 'a-ticket-secret-for-the-browser-tests-0123',
      '--cors-origin', allowed.origin, '--retry', '300ms', '--log', 'warn',
    ], { stdio: ['ignore', log, log] });
    await h.waitForListening('127.0.0.1', port);
    relay = await startRelay(port);
    api = `http://127.0.0.1:${relay.port}`;
    browser = await h.launchBrowser();
  });

  after(async () => {
    await browser?.close();
    relay?.close();
    allowed?.close();
    stranger?.close();
    if (server && server.exitCode === null) {
      const exited = new Promise((resolve) => server.once('exit', resolve));
      server.kill('SIGTERM');
      await exited;
    }
  });

  /** Creates a job as Bob, from the test. */
  async function createAsBob(params) {
    const response = await fetch(`${api}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${BOB_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'demo', params }),
    });
    assert.equal(response.status, 202);
    return response.json();
  }

  async function pageAt(origin) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${origin}/page.html`);
    return { context, page };
  }

  test('a page of an allowed origin logs in, starts a job with the cookie and follows it across a dropped connection', { timeout: 60000 }, async () => {
    const { context, page } = await pageAt(allowed.origin);
    const started = await page.evaluate(async ({ api, key }) => {
      const session = await fetch(`${api}/v1/session`, {
        method: 'POST', credentials: 'include', headers: { authorization: `Bearer ${key}` },
      });
      const created = await fetch(`${api}/v1/jobs`, {
        method: 'POST',
        credentials: 'include',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ kind: 'demo', params: { stages: [{ name: 'work', weight: 1, steps: 60 }], step_ms: 50 } }),
      });
      const job = await created.json();
      window.seen = { events: [], opens: 0 };
      const source = new EventSource(`${api}/v1/jobs/${job.id}/events`, { withCredentials: true });
      source.onopen = () => { window.seen.opens += 1; };
      for (const name of ['snapshot', 'progress', 'completed', 'failed', 'cancelled']) {
        source.addEventListener(name, (event) => {
          window.seen.events.push({ name, id: Number(event.lastEventId), seq: JSON.parse(event.data).seq });
          if (name === 'completed') source.close();
        });
      }
      return { session: session.status, created: created.status, location: created.headers.get('location'), job };
    }, { api, key: ALICE_KEY });
    assert.equal(started.session, 204);
    assert.equal(started.created, 202, 'created with the session cookie alone, from an allowed origin');
    assert.equal(started.location, `/v1/jobs/${started.job.id}`, 'Location is exposed');
    assert.equal(started.job.owner, 'alice');
    // Let it run a little, then drop every connection between browser and server.
    await page.waitForFunction(() => window.seen.events.length >= 5, null, { timeout: 20000 });
    relay.cut();
    await page.waitForFunction(() => window.seen.events.some((e) => e.name === 'completed'), null, { timeout: 40000 });
    const seen = await page.evaluate(() => window.seen);
    assert.ok(seen.opens >= 2, `the EventSource reconnected (${seen.opens} opens)`);
    assert.ok(relay.resumes.length >= 1, 'the reconnect sent Last-Event-ID');
    const seqs = seen.events.map((e) => e.seq);
    for (let i = 1; i < seqs.length; i += 1) assert.ok(seqs[i] > seqs[i - 1], `seq rises: ${seqs}`);
    assert.equal(seen.events.filter((e) => e.name === 'completed').length, 1);
    await context.close();
  });

  test('a page that has only the stream_url follows the job', { timeout: 60000 }, async () => {
    const job = await createAsBob({ stages: [{ name: 'work', weight: 1, steps: 20 }], step_ms: 50 });
    assert.match(job.stream_url, /^\/v1\/jobs\/[0-9a-f-]+\/events\?ticket=[\w-]+$/);
    const { context, page } = await pageAt(allowed.origin);
    const events = await page.evaluate((url) => new Promise((resolve, reject) => {
      const names = [];
      const source = new EventSource(url);
      for (const name of ['snapshot', 'progress', 'completed']) {
        source.addEventListener(name, (event) => {
          names.push({ name, owner: JSON.parse(event.data).owner });
          if (name === 'completed') { source.close(); resolve(names); }
        });
      }
      source.onerror = () => { if (source.readyState === EventSource.CLOSED) reject(new Error('refused')); };
    }), `${api}${job.stream_url}`);
    assert.equal(events.at(-1).name, 'completed');
    assert.ok(events.every((e) => e.owner === 'bob'));
    await context.close();
  });

  test('a page of an origin that is not allowed is refused at every step', { timeout: 60000 }, async () => {
    const job = await createAsBob({ delay_ms: 60000 });
    const { context, page } = await pageAt(stranger.origin);
    const outcome = await page.evaluate(async ({ api, key, streamUrl }) => {
      const attempt = (promise) => promise.then((response) => `answered ${response.status}`, () => 'refused');
      const session = await attempt(fetch(`${api}/v1/session`, {
        method: 'POST', credentials: 'include', headers: { authorization: `Bearer ${key}` },
      }));
      const list = await attempt(fetch(`${api}/v1/jobs`, { credentials: 'include' }));
      const ticket = await attempt(fetch(`${api}${streamUrl}`));
      const stream = await new Promise((resolve) => {
        const source = new EventSource(`${api}${streamUrl}`, { withCredentials: true });
        source.onopen = () => { source.close(); resolve('opened'); };
        source.onerror = () => { source.close(); resolve('refused'); };
      });
      return { session, list, ticket, stream };
    }, { api, key: ALICE_KEY, streamUrl: job.stream_url });
    assert.deepEqual(outcome, { session: 'refused', list: 'refused', ticket: 'refused', stream: 'refused' });
    await context.close();
  });

  test('the dashboard asks for a key once, then uses the session cookie, and shows owners', { timeout: 60000 }, async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${api}/`);
    await page.waitForSelector('#login[open]');
    await page.fill('#login-key', 'not-a-key');
    await page.click('#login-button');
    await page.waitForSelector('#login-error:not([hidden])');
    await page.fill('#login-key', ALICE_KEY);
    await page.click('#login-button');
    await page.waitForSelector('#conn[data-state="live"]');
    await page.waitForSelector('#kind option[value="demo"]', { state: 'attached' });
    const job = await h.startFromForm(page, { stages: [{ name: 'work', weight: 1, steps: 5 }], step_ms: 50 });
    assert.equal(job.owner, 'alice');
    await page.waitForSelector(`${h.card(job.id)} .owner`);
    assert.equal((await h.cardText(page, job.id, '.owner')).trim(), 'owner: alice');
    // Bob's jobs are not Alice's to see.
    const bobs = await createAsBob({ delay_ms: 60000 });
    await h.waitForBadge(page, job.id, 'completed');
    assert.equal(await page.$(h.card(bobs.id)), null);
    // A reload keeps the session: no second question.
    await page.reload();
    await page.waitForSelector('#conn[data-state="live"]');
    assert.equal(await page.$('#login[open]'), null);
    await page.waitForSelector(h.card(job.id));
    await h.screenshot(page, 'auth-dashboard');
    await context.close();
  });
});
