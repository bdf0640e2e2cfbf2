// Shared pieces of the dashboard's browser tests: the browser, the server
// under test (started by ui/run-tests.sh, which passes it in JOBCAST_TEST_*
// variables), API shortcuts, waits and screenshots.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { chromium } = require('playwright-core');

const BASE_URL = process.env.JOBCAST_TEST_URL || 'http://127.0.0.1:8080';
const OUTPUT_DIR = process.env.JOBCAST_TEST_OUTPUT || path.join(__dirname, '..', 'test-output');
const UI_DIR = path.join(__dirname, '..');

function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/**
 * With JOBCAST_TEST_UI_FROM_DISK=1 the page and every file under /ui/ are
 * served from ui/ instead of the binary, to try changes without rebuilding
 * the server. Off by default: the tests check what the binary embeds.
 */
async function maybeServeUiFromDisk(context) {
  if (process.env.JOBCAST_TEST_UI_FROM_DISK !== '1') return;
  const contentTypes = {
    '.html': 'text/html; charset=utf-8',
    '.js': 'text/javascript; charset=utf-8',
    '.css': 'text/css; charset=utf-8',
  };
  const fileFor = (pathname) => {
    if (pathname === '/') return 'index.html';
    const name = pathname.match(/^\/ui\/([\w-]+\.(?:js|css))$/)?.[1];
    return name && fs.existsSync(path.join(UI_DIR, name)) ? name : null;
  };
  await context.route((url) => url.origin === BASE_URL && fileFor(url.pathname) !== null, (route) => {
    const file = fileFor(new URL(route.request().url()).pathname);
    return route.fulfill({
      body: fs.readFileSync(path.join(UI_DIR, file)),
      contentType: contentTypes[path.extname(file)],
    });
  });
}

/** Calls the API from the test (not from the page). */
async function api(method, urlPath, body) {
  const response = await fetch(BASE_URL + urlPath, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function createJob(params, labels) {
  const { status, body } = await api('POST', '/v1/jobs', { kind: 'demo', params, labels });
  if (status !== 202) throw new Error(`creating a job answered ${status}: ${JSON.stringify(body)}`);
  return body;
}

/** Resolves once `GET /v1/jobs/{id}` shows a terminal status. */
async function waitForJobEnd(id, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let seq = 0;
  while (Date.now() < deadline) {
    const { body } = await api('GET', `/v1/jobs/${id}?wait_seconds=5&after_seq=${seq}`);
    if (['completed', 'failed', 'cancelled'].includes(body.status)) return body;
    seq = body.seq;
  }
  throw new Error(`job ${id} did not end within ${timeoutMs} ms`);
}

/** Opens the dashboard (at `path`) and waits until its stream is live and kinds are loaded. */
async function openDashboard(context, onRequest, path = '/') {
  const page = await context.newPage();
  if (onRequest) page.on('request', onRequest);
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });
  page.problems = problems;
  await page.goto(BASE_URL + path);
  await page.waitForSelector('#conn[data-state="live"]');
  await page.waitForSelector('#kind option[value="demo"]', { state: 'attached' });
  return page;
}

/** Fills the start form with demo params and returns the created job. */
async function startFromForm(page, params, kind = 'demo') {
  await page.selectOption('#kind', kind);
  await page.fill('#params', JSON.stringify(params, null, 2));
  const [response] = await Promise.all([
    page.waitForResponse((r) => new URL(r.url()).pathname === '/v1/jobs' && r.request().method() === 'POST'),
    page.click('#start-button'),
  ]);
  if (response.status() !== 202) throw new Error(`start answered ${response.status()}`);
  return response.json();
}

const card = (id) => `li.job[data-id="${id}"]`;

async function cardText(page, id, part) {
  return page.textContent(`${card(id)} ${part}`);
}

async function waitForBadge(page, id, status, timeout = 30000) {
  await page.waitForSelector(`${card(id)} .badge[data-status="${status}"]`, { timeout });
}

async function screenshot(page, name, options = {}) {
  fs.mkdirSync(OUTPUT_DIR, { recursive: true });
  const file = path.join(OUTPUT_DIR, `${name}.png`);
  await page.screenshot({ path: file, ...options });
  return file;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ------------------------------------------------------------------ the server process

/** Whether something accepts a connection at host:port now. */
function acceptsConnections(host, port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

/** A port nothing listens on now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

/** Resolves once host:port accepts connections. */
async function waitForListening(host, port, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await acceptsConnections(host, port)) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on ${host}:${port}`);
}

/** Resolves once nothing accepts connections at host:port. */
async function waitForPortClosed(host, port, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await acceptsConnections(host, port))) return;
    await sleep(50);
  }
  throw new Error(`${host}:${port} still accepts connections`);
}

async function waitForReady(timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`${BASE_URL}/readyz`)).ok) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error('the restarted server never became ready');
}

const canRestartServer = () => Boolean(process.env.JOBCAST_TEST_BIN && process.env.JOBCAST_TEST_PIDFILE);

/**
 * Stops the server that ui/run-tests.sh (or an earlier restart) started;
 * SIGKILL to see what a crash leaves behind.
 */
async function stopServer(signal = 'SIGTERM') {
  const pid = Number(fs.readFileSync(process.env.JOBCAST_TEST_PIDFILE, 'utf8').trim());
  process.kill(pid, signal);
  const [host, port] = process.env.JOBCAST_TEST_ADDR.split(':');
  await waitForPortClosed(host, Number(port));
}

/** Starts the server again on the same address; run-tests.sh stops it at exit. */
async function startServer() {
  const log = fs.openSync(process.env.JOBCAST_TEST_LOG || '/dev/null', 'a');
  const args = ['--listen', process.env.JOBCAST_TEST_ADDR,
    ...(process.env.JOBCAST_TEST_ARGS || '').split(/\s+/).filter(Boolean)];
  const child = spawn(process.env.JOBCAST_TEST_BIN, args, { detached: true, stdio: ['ignore', log, log] });
  fs.writeFileSync(process.env.JOBCAST_TEST_PIDFILE, `${child.pid}\n`);
  child.unref();
  await waitForReady();
}

module.exports = {
  BASE_URL, OUTPUT_DIR, launchBrowser, maybeServeUiFromDisk, api, createJob, waitForJobEnd,
  openDashboard, startFromForm, card, cardText, waitForBadge, screenshot, sleep,
  canRestartServer, stopServer, startServer, acceptsConnections, freePort, waitForListening,
};
