// The page's files as the binary serves them: every ES module and the style
// sheet in ui/ is loaded by the page, each with its content type and
// Cache-Control: no-cache, and an unknown name under /ui/ is a 404 problem.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { after, before, test } = require('node:test');
const h = require('./helpers');

const { BASE_URL } = h;
const UI_DIR = path.join(__dirname, '..');
const CONTENT_TYPES = { '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

let browser;

before(async () => {
  browser = await h.launchBrowser();
});

after(async () => {
  await browser?.close();
});

test('the page loads every module and the style sheet in ui/, each served from the binary with its type', async () => {
  const context = await browser.newContext();
  const served = new Map();
  context.on('response', (response) => {
    const url = new URL(response.url());
    if (url.origin === BASE_URL && url.pathname.startsWith('/ui/')) served.set(url.pathname, response);
  });
  const page = await h.openDashboard(context);

  const onDisk = fs.readdirSync(UI_DIR).filter((name) => CONTENT_TYPES[path.extname(name)] !== undefined);
  assert.deepEqual([...served.keys()].sort(), onDisk.map((name) => `/ui/${name}`).sort(),
    'the page loads exactly the modules and style sheet in ui/');
  for (const [pathname, response] of served) {
    const headers = await response.allHeaders();
    assert.equal(response.status(), 200, pathname);
    assert.equal(headers['content-type'], CONTENT_TYPES[path.extname(pathname)], pathname);
    assert.equal(headers['cache-control'], 'no-cache', pathname);
  }
  assert.deepEqual(page.problems, []);
  await context.close();
});

test('an unknown file under /ui/ is a 404 problem', async () => {
  const response = await fetch(`${BASE_URL}/ui/x.js`);
  assert.equal(response.status, 404);
  assert.equal(response.headers.get('content-type'), 'application/problem+json');
  const problem = await response.json();
  assert.equal(problem.status, 404);
  assert.match(problem.detail, /\/ui\/x\.js/);
});
