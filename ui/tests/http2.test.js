// HTTP/2 in a real browser: a page on an HTTPS origin with a self-signed
// certificate opens 20 EventSources at once, and every one receives live
// progress, over one HTTP/2 connection. (Over HTTP/1.1 a browser opens at
// most six connections to one origin, so the seventh stream would wait.)
//
// Starts its own jobcast with --tls-cert/--tls-key on a free port, with a
// certificate made by openssl (ui/run-tests.sh installs it when missing).
'use strict';

const assert = require('node:assert/strict');
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { after, before, describe, test } = require('node:test');
const h = require('./helpers');

const STREAMS = 20;

/** A self-signed certificate for 127.0.0.1 and localhost, as PEM files in `dir`. */
function makeCertificate(dir) {
  const cert = path.join(dir, 'tls-cert.pem');
  const key = path.join(dir, 'tls-key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' });
  return { cert, key };
}

describe('HTTP/2 over TLS', () => {
  let server;
  let origin;
  let browser;

  before(async () => {
    fs.mkdirSync(h.OUTPUT_DIR, { recursive: true });
    const { cert, key } = makeCertificate(h.OUTPUT_DIR);
    const port = await h.freePort();
    origin = `https://127.0.0.1:${port}`;
    const log = fs.openSync(path.join(h.OUTPUT_DIR, 'tls-server.log'), 'a');
    server = spawn(process.env.JOBCAST_TEST_BIN, [
      '--listen', `127.0.0.1:${port}`, '--store', 'memory', '--tls-cert', cert, '--tls-key', key, '--log', 'warn',
    ], { stdio: ['ignore', log, log] });
    await h.waitForListening('127.0.0.1', port);
    browser = await h.launchBrowser();
  });

  after(async () => {
    await browser?.close();
    if (server && server.exitCode === null) {
      const exited = new Promise((resolve) => server.once('exit', resolve));
      server.kill('SIGTERM');
      await exited;
    }
  });

  test(`a page opens ${STREAMS} EventSources to one origin and every one gets live progress`, { timeout: 60000, skip: !process.env.JOBCAST_TEST_BIN && 'needs ui/run-tests.sh' }, async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const navigation = await page.goto(`${origin}/healthz`);
    assert.equal(navigation.status(), 200);

    // In the page: start the jobs, open every stream at once, and record
    // what each receives until its job ends.
    const seen = await page.evaluate(async (count) => {
      const params = { stages: [{ name: 'work', weight: 1, steps: 40 }], step_ms: 100 };
      const jobs = await Promise.all(Array.from({ length: count }, async () => {
        const response = await fetch('/v1/jobs', {
          method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'demo', params }),
        });
        if (response.status !== 202) throw new Error(`creating a job answered ${response.status}`);
        return response.json();
      }));
      const streams = jobs.map((job) => {
        const record = { id: job.id, url: new URL(`/v1/jobs/${job.id}/events`, location.href).href, events: [] };
        const source = new EventSource(record.url);
        for (const name of ['snapshot', 'progress', 'completed', 'failed', 'cancelled']) {
          source.addEventListener(name, (event) => {
            record.events.push({ name, seq: JSON.parse(event.data).seq, at: performance.now() });
          });
        }
        record.done = new Promise((resolve) => {
          source.addEventListener('completed', () => { source.close(); resolve(); });
        });
        return record;
      });
      // Every stream has had live progress while every other was open:
      // the first progress event of each comes before any job ended.
      await Promise.all(streams.map((record) => record.done));
      return streams.map(({ id, url, events }) => ({ id, url, events }));
    }, STREAMS);

    assert.equal(seen.length, STREAMS);
    const firstEnd = Math.min(...seen.map((s) => s.events.find((e) => e.name === 'completed').at));
    for (const { id, events } of seen) {
      const progress = events.filter((e) => e.name === 'progress');
      assert.ok(progress.length > 0, `stream of ${id} got live progress`);
      assert.ok(progress[0].at < firstEnd, `stream of ${id} had progress while all ${STREAMS} were open`);
      const seqs = events.map((e) => e.seq);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), `seqs rise in ${id}`);
      assert.equal(events.filter((e) => e.name === 'completed').length, 1);
    }

    // The page and every stream went over HTTP/2.
    const protocols = await page.evaluate((urls) => {
      const entries = performance.getEntries();
      return [entries[0].nextHopProtocol,
        ...urls.map((url) => entries.find((e) => e.name === url)?.nextHopProtocol ?? 'no entry')];
    }, seen.map((s) => s.url));
    assert.deepEqual(protocols, Array(STREAMS + 1).fill('h2'));
    await context.close();
  });
});
