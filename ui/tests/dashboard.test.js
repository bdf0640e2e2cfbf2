// The dashboard in a real browser against a real server. Run through
// ui/run-tests.sh, which starts the server and passes its address.
'use strict';

const fs = require('node:fs');
const assert = require('node:assert/strict');
const { after, before, describe, test } = require('node:test');
const h = require('./helpers');

const { BASE_URL, card } = h;

/** Records, in the page, every change of the job cards' key facts. */
async function recordCards(page) {
  await page.evaluate(() => {
    window.__seen = [];
    const snap = () => {
      for (const li of document.querySelectorAll('li.job')) {
        const cancel = li.querySelector('button.cancel');
        const entry = {
          id: li.dataset.id,
          status: li.querySelector('.badge').textContent,
          now: Number(li.querySelector('[role="progressbar"]').getAttribute('aria-valuenow')),
          cancel: cancel.hidden ? null : cancel.textContent,
        };
        const last = window.__seen.findLast((e) => e.id === entry.id);
        if (!last || last.status !== entry.status || last.now !== entry.now || last.cancel !== entry.cancel) {
          window.__seen.push(entry);
        }
      }
    };
    new MutationObserver(snap).observe(document.getElementById('jobs'), {
      subtree: true, childList: true, attributes: true, characterData: true,
    });
  });
}

const seenFor = (page, id) => page.evaluate((jobId) => window.__seen.filter((e) => e.id === jobId), id);

describe('dashboard', () => {
  let browser;
  let context;
  const requests = [];
  const pages = [];

  before(async () => {
    browser = await h.launchBrowser();
    context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    await h.maybeServeUiFromDisk(context);
  });

  after(async () => {
    await browser?.close();
  });

  async function open(path) {
    const page = await h.openDashboard(context, (request) => requests.push(request.url()), path);
    pages.push(page);
    return page;
  }

  /** Closes the page after checking that its script threw nothing. */
  async function done(page) {
    const thrown = page.problems.filter((p) => p.startsWith('page error'));
    await page.close();
    assert.deepEqual(thrown, [], 'the page script threw');
  }

  test('an external job started from the form shows its worker token, which drives the job', { timeout: 60000 }, async () => {
    const page = await open();
    const job = await h.startFromForm(page, { url: 'https://example.com/data.csv' }, 'ingest');
    const shown = await page.textContent('#start-ok');
    assert.match(shown, new RegExp(`Started ingest job ${job.id.slice(-8)}\\. Its worker token, shown only now: ${job.worker_token}$`));
    await h.waitForBadge(page, job.id, 'queued');
    const completed = await fetch(`${h.BASE_URL}/v1/jobs/${job.id}/complete`, {
      method: 'POST',
      headers: { authorization: `Bearer ${job.worker_token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ result: { rows: 3 } }),
    });
    assert.equal(completed.status, 200);
    await h.waitForBadge(page, job.id, 'completed');
    await done(page);
  });

  test('a demo job started from the form reaches 100% and the badge turns completed', { timeout: 60000 }, async () => {
    const page = await open();
    await recordCards(page);
    const job = await h.startFromForm(page, {
      stages: [{ name: 'parsing', weight: 0.3, steps: 8 }, { name: 'analyzing', weight: 0.7, steps: 16 }],
      step_ms: 80,
    });
    assert.match(await page.textContent('#start-ok'), new RegExp(`Started demo job ${job.id.slice(-8)}`));
    await h.waitForBadge(page, job.id, 'running');
    await page.waitForFunction((sel) => {
      const now = Number(document.querySelector(`${sel} [role="progressbar"]`).getAttribute('aria-valuenow'));
      return now > 20 && now < 100;
    }, card(job.id));
    await h.screenshot(page, 'start-running');
    await h.waitForBadge(page, job.id, 'completed');
    const bar = page.locator(`${card(job.id)} [role="progressbar"]`);
    assert.equal(await bar.getAttribute('aria-valuenow'), '100');
    assert.equal(await bar.getAttribute('aria-valuemin'), '0');
    assert.equal(await bar.getAttribute('aria-valuemax'), '100');
    assert.match(await bar.getAttribute('aria-label'), /progress/i);
    assert.equal(await h.cardText(page, job.id, '.pct'), '100%');
    assert.ok(await page.isHidden(`${card(job.id)} button.cancel`), 'a finished job has no Cancel button');
    assert.match(await h.cardText(page, job.id, '.finished'), /^finished \d\d:\d\d:\d\d/);
    const segments = await page.$$eval(`${card(job.id)} .seg`, (segs) => segs.map((s) => s.dataset.status));
    assert.deepEqual(segments, ['done', 'done']);

    const seen = await seenFor(page, job.id);
    const values = seen.map((e) => e.now);
    assert.ok(values.some((v) => v > 0 && v < 100), `intermediate progress was shown: ${values}`);
    for (let i = 1; i < values.length; i += 1) assert.ok(values[i] >= values[i - 1], `progress went back: ${values}`);
    assert.ok(seen.every((e) => e.now < 100 || e.status === 'completed'), '100% only once completed');
    await h.screenshot(page, 'start-completed');
    await done(page);
  });

  test('cancelling a long job shows "Cancelling…" until the server answers, then cancelled', { timeout: 60000 }, async () => {
    const page = await open();
    await recordCards(page);
    // Hold the server's answer for a moment so the pending state is visible.
    await page.route('**/v1/jobs/*/cancel', async (route) => {
      const response = await route.fetch();
      await h.sleep(800);
      await route.fulfill({ response });
    });
    const job = await h.startFromForm(page, { stages: [{ name: 'crunching', weight: 1, steps: 100 }], step_ms: 500 });
    await h.waitForBadge(page, job.id, 'running');
    const button = page.locator(`${card(job.id)} button.cancel`);
    assert.equal(await button.textContent(), 'Cancel');
    await button.click();
    assert.equal(await button.textContent(), 'Cancelling…');
    assert.ok(await button.isDisabled());
    await h.screenshot(page, 'cancel-pending');
    await h.waitForBadge(page, job.id, 'cancelled');
    await page.waitForSelector(`${card(job.id)} button.cancel`, { state: 'hidden' });
    assert.equal(await h.cardText(page, job.id, '.err-code'), 'cancelled');
    assert.equal(await h.cardText(page, job.id, '.err-stage'), 'in stage crunching');
    const segments = await page.$$eval(`${card(job.id)} .seg`, (segs) => segs.map((s) => s.dataset.status));
    assert.deepEqual(segments, ['cancelled']);

    const seen = await seenFor(page, job.id);
    const pending = seen.findIndex((e) => e.cancel === 'Cancelling…');
    const ended = seen.findIndex((e) => e.status === 'cancelled' && e.cancel === null);
    assert.ok(pending >= 0 && ended > pending, `"Cancelling…" came before the outcome: ${JSON.stringify(seen)}`);
    assert.ok(seen.slice(pending, ended).every((e) => e.cancel === 'Cancelling…'), 'the button stayed "Cancelling…"');
    await h.screenshot(page, 'cancelled');
    await done(page);
  });

  test('a cancel that loses the race to completion shows the job completed', { timeout: 60000 }, async () => {
    const page = await open();
    // Delay the cancel request until the job has completed: the server answers 409 with the job.
    await page.route('**/v1/jobs/*/cancel', async (route) => {
      const id = route.request().url().split('/').at(-2);
      await h.waitForJobEnd(id);
      await route.continue();
    });
    const job = await h.startFromForm(page, { stages: [{ name: 'quick', weight: 1, steps: 10 }], step_ms: 100 });
    await h.waitForBadge(page, job.id, 'running');
    const button = page.locator(`${card(job.id)} button.cancel`);
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith(`/v1/jobs/${job.id}/cancel`)),
      button.click(),
    ]);
    assert.equal(response.status(), 409);
    await h.waitForBadge(page, job.id, 'completed');
    await page.waitForSelector(`${card(job.id)} button.cancel`, { state: 'hidden' });
    assert.equal(await h.cardText(page, job.id, '.note'), 'The job completed before the cancel took effect.');
    assert.equal(await page.getAttribute(`${card(job.id)} [role="progressbar"]`, 'aria-valuenow'), '100');
    await done(page);
  });

  test('a failing demo job shows its error code, message and stage', { timeout: 60000 }, async () => {
    const page = await open();
    const job = await h.startFromForm(page, {
      stages: [{ name: 'parsing', weight: 0.25, steps: 10 }, { name: 'analyzing', weight: 0.75, steps: 20 }],
      step_ms: 30,
      fail_at: 'analyzing',
    });
    await h.waitForBadge(page, job.id, 'failed');
    assert.equal(await h.cardText(page, job.id, '.err-code'), 'demo_failure');
    assert.match(await h.cardText(page, job.id, '.err-msg'), /failed in stage "analyzing"/);
    assert.equal(await h.cardText(page, job.id, '.err-stage'), 'in stage analyzing');
    const segments = await page.$$eval(`${card(job.id)} .seg`, (segs) => segs.map((s) => s.dataset.status));
    assert.deepEqual(segments, ['done', 'failed']);
    const now = Number(await page.getAttribute(`${card(job.id)} [role="progressbar"]`, 'aria-valuenow'));
    assert.ok(now > 0 && now < 100, `a failed job keeps its partial progress (${now})`);
    await page.locator(card(job.id)).screenshot({ path: `${h.OUTPUT_DIR}/failed-card.png` });
    await done(page);
  });

  test('the start form shows the problem detail of a rejected request', { timeout: 30000 }, async () => {
    const page = await open();
    await page.fill('#params', '{"step_ms": 10, "bogus": true}');
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${BASE_URL}/v1/jobs`),
      page.click('#start-button'),
    ]);
    assert.equal(response.status(), 422);
    const { detail } = await response.json();
    await page.waitForSelector('#start-error:not([hidden])');
    assert.equal(await page.textContent('#start-error'), detail);

    await page.fill('#params', '{"step_ms": ');
    await page.click('#start-button');
    assert.match(await page.textContent('#start-error'), /^Params are not valid JSON/);

    await page.click('#reset-params');
    const example = JSON.parse(await page.inputValue('#params'));
    const { body } = await h.api('GET', '/v1/kinds');
    assert.deepEqual(example, body.kinds.find((k) => k.name === 'demo').example);
    await done(page);
  });

  test('the status and kind filters show only matching jobs', { timeout: 30000 }, async () => {
    const failed = await h.createJob({ stages: [{ name: 'one', steps: 2 }], step_ms: 0, fail_at: 'one' });
    await h.waitForJobEnd(failed.id);
    const page = await open();
    await page.waitForSelector(card(failed.id));
    await page.selectOption('#filter-status', 'failed');
    await page.waitForFunction(() => [...document.querySelectorAll('li.job:not([hidden])')]
      .every((li) => li.dataset.status === 'failed'));
    assert.ok(await page.isVisible(card(failed.id)));
    const visible = await page.$$eval('li.job:not([hidden])', (lis) => lis.map((li) => li.dataset.status));
    assert.ok(visible.length >= 1 && visible.every((s) => s === 'failed'));

    await page.selectOption('#filter-status', 'completed');
    await page.waitForSelector(card(failed.id), { state: 'hidden' });
    await page.selectOption('#filter-status', '');
    await page.selectOption('#filter-kind', 'demo');
    // The list is re-rendered on the next animation frame: wait for it.
    await page.waitForSelector(card(failed.id), { state: 'visible' });
    await done(page);
  });

  test('each card shows its labels; the label filter replaces the page\'s one stream and is kept in the address', { timeout: 60000 }, async () => {
    const run = `r${Date.now()}`;
    const quick = { stages: [{ name: 'one', steps: 2 }], step_ms: 0 };
    const prod = await h.createJob(quick, { run, project: '42', env: 'prod' });
    const dev = await h.createJob(quick, { run, project: '42', env: 'dev' });
    const other = await h.createJob(quick, { run, project: '7' });
    await Promise.all([prod, dev, other].map((job) => h.waitForJobEnd(job.id)));
    const streams = [];
    const page = await open();
    page.on('request', (request) => {
      if (new URL(request.url()).pathname === '/v1/events') streams.push(request.url());
    });
    await page.waitForSelector(card(other.id));
    const chips = await page.$$eval(`${card(prod.id)} .label-chip`, (buttons) => buttons.map((b) => b.textContent));
    assert.deepEqual(chips, ['env=prod', 'project=42', `run=${run}`]);
    await page.locator(card(prod.id)).screenshot({ path: `${h.OUTPUT_DIR}/labels-card.png` });

    await page.fill('#filter-labels', `run=${run}, project=42`);
    await page.press('#filter-labels', 'Enter');
    await page.waitForSelector(card(other.id), { state: 'detached' });
    assert.ok(await page.isVisible(card(prod.id)) && await page.isVisible(card(dev.id)));
    const expected = `${BASE_URL}/v1/events?label=${encodeURIComponent(`run=${run}`)}&label=${encodeURIComponent('project=42')}`;
    assert.deepEqual(streams, [expected], 'one new stream, for the labels');
    assert.deepEqual(new URL(page.url()).searchParams.getAll('label'), [`run=${run}`, 'project=42']);
    // Jobs created now reach the page only if they have the labels.
    const late = await h.createJob(quick, { run, project: '42' });
    const outsider = await h.createJob(quick, { run, project: '7' });
    await h.waitForBadge(page, late.id, 'completed');
    await h.waitForJobEnd(outsider.id);
    assert.equal(await page.$(card(outsider.id)), null, 'a job without the labels is not shown');
    const visible = await page.$$eval('li.job:not([hidden])', (lis) => lis.map((li) => li.dataset.id).sort());
    assert.deepEqual(visible, [prod.id, dev.id, late.id].sort());

    // A click on a label narrows the filter.
    await page.click(`${card(prod.id)} .label-chip:text-is("env=prod")`);
    await page.waitForSelector(card(dev.id), { state: 'detached' });
    assert.equal(await page.inputValue('#filter-labels'), `run=${run}, project=42, env=prod`);
    assert.equal(streams.length, 2);
    assert.match(streams[1], /label=env%3Dprod/);

    await page.fill('#filter-labels', 'project');
    await page.press('#filter-labels', 'Enter');
    assert.match(await page.textContent('#filter-labels-error'), /"project" is not key=value/);
    assert.equal(streams.length, 2, 'a malformed filter changes nothing');

    // A link with a label filter opens on those jobs.
    const linked = await open(`/?label=${encodeURIComponent(`run=${run}`)}&label=project%3D7`);
    await linked.waitForSelector(card(outsider.id));
    assert.equal(await linked.inputValue('#filter-labels'), `run=${run}, project=7`);
    const shown = await linked.$$eval('li.job', (lis) => lis.map((li) => li.dataset.id).sort());
    assert.deepEqual(shown, [other.id, outsider.id].sort());
    await done(linked);
    await done(page);
  });

  test('the start form sends the labels it is given', { timeout: 30000 }, async () => {
    const page = await open();
    await page.fill('#labels', 'team=ui, ticket=JC-1');
    const job = await h.startFromForm(page, { stages: [{ name: 'one', steps: 1 }], step_ms: 0 });
    assert.deepEqual(job.labels, { team: 'ui', ticket: 'JC-1' });
    await page.fill('#labels', 'team');
    await page.click('#start-button');
    assert.match(await page.textContent('#start-error'), /^Labels: "team" is not key=value/);
    await done(page);
  });

  test('failed and cancelled jobs have a Retry button, marked when the error is retryable, that starts a new job', { timeout: 60000 }, async () => {
    const failed = await h.createJob({ stages: [{ name: 'one', steps: 2 }], step_ms: 0, fail_at: 'one' });
    const cancelled = await h.createJob({ stages: [{ name: 'one', steps: 2 }], step_ms: 0, delay_ms: 60000 });
    const completed = await h.createJob({ stages: [{ name: 'one', steps: 1 }], step_ms: 0 });
    assert.equal((await h.api('POST', `/v1/jobs/${cancelled.id}/cancel`)).status, 200);
    await Promise.all([failed, completed].map((job) => h.waitForJobEnd(job.id)));
    const page = await open();
    await h.waitForBadge(page, failed.id, 'failed');
    await h.waitForBadge(page, cancelled.id, 'cancelled');
    await h.waitForBadge(page, completed.id, 'completed');
    const retryOf = (id) => page.locator(`${card(id)} button.retry`);
    assert.ok(await retryOf(failed.id).isVisible());
    assert.match(await retryOf(failed.id).getAttribute('class'), /\bretryable\b/, 'the demo failure is retryable');
    assert.match(await retryOf(failed.id).getAttribute('aria-label'), /marked retryable/);
    assert.ok(await retryOf(cancelled.id).isVisible());
    assert.doesNotMatch(await retryOf(cancelled.id).getAttribute('class'), /\bretryable\b/);
    assert.ok(await retryOf(completed.id).isHidden(), 'a completed job has no Retry button');

    const [response] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith(`/v1/jobs/${failed.id}/retry`)),
      retryOf(failed.id).click(),
    ]);
    assert.equal(response.status(), 202);
    const retry = await response.json();
    assert.equal(retry.retry_of, failed.id);
    await h.waitForBadge(page, retry.id, 'failed');
    assert.equal(await h.cardText(page, retry.id, '.retry-of'), `retries job ${failed.id.slice(-8)}`);
    assert.equal(await h.cardText(page, failed.id, '.note'), `Retried as job ${retry.id.slice(-8)}.`);
    await page.locator(card(failed.id)).screenshot({ path: `${h.OUTPUT_DIR}/retry-card.png` });
    await done(page);
  });

  test('the detail view shows the job and its raw events, in order, ending with the terminal event', { timeout: 60000 }, async () => {
    const page = await open();
    const job = await h.startFromForm(page, {
      stages: [{ name: 'fetching', weight: 0.4, steps: 6 }, { name: 'building', weight: 0.6, steps: 8 }],
      step_ms: 120,
      delay_ms: 300,
    });
    await page.click(`${card(job.id)} .job-title`);
    await page.waitForSelector('#detail[open]');
    await page.waitForSelector('#detail-events li[data-type="completed"]', { timeout: 30000 });
    assert.match(await page.textContent('#detail-stream'), /ended with completed/);
    const events = await page.$$eval('#detail-events li', (lis) => lis.map((li) => ({
      type: li.dataset.type,
      id: li.querySelector('.ev-id').textContent,
      data: JSON.parse(li.querySelector('.ev-data').textContent),
    })));
    assert.ok(['snapshot', 'completed'].includes(events[0].type), 'the stream opens with the current state');
    assert.equal(events.at(-1).type, 'completed');
    const seqs = events.map((e) => e.data.seq);
    for (let i = 1; i < seqs.length; i += 1) assert.ok(seqs[i] > seqs[i - 1], `seq grows: ${seqs}`);
    assert.ok(events.every((e) => e.id === `id ${e.data.seq}` && e.data.id === job.id));
    assert.match(await page.textContent('#detail-facts'), new RegExp(job.id));
    assert.match(await page.textContent('#detail-title'), /demo job/);
    await h.screenshot(page, 'detail');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#detail', { state: 'hidden' });
    await done(page);
  });

  test('desktop: running, completed and failed jobs with weighted stage segments, rate and ETA', { timeout: 60000 }, async () => {
    // Oldest first: the page lists newest first, so the running jobs lead.
    const resize = await h.createJob({ stages: [{ name: 'resize', weight: 1, steps: 100 }], step_ms: 400 });
    await h.sleep(600);
    await h.api('POST', `/v1/jobs/${resize.id}/cancel`);
    const finished = await h.createJob({
      stages: [{ name: 'fetch', weight: 0.3, steps: 4 }, { name: 'convert', weight: 0.7, steps: 6 }], step_ms: 0,
    });
    await h.waitForJobEnd(finished.id);
    await h.createJob({ stages: [{ name: 'download', weight: 1, steps: 5 }], step_ms: 0, fail_at: 'download' });
    const slow = await h.createJob({
      stages: [
        { name: 'parsing', weight: 0.15, steps: 10 },
        { name: 'analyzing', weight: 0.6, steps: 400 },
        { name: 'integrating', weight: 0.2, steps: 50 },
        { name: 'formatting', weight: 0.05, steps: 10 },
      ],
      step_ms: 60,
    });
    const other = await h.createJob({
      stages: [{ name: 'indexing', weight: 2, steps: 300 }, { name: 'publishing', weight: 1, steps: 40 }],
      step_ms: 90,
    });
    const page = await open();
    await page.waitForFunction((sel) => {
      const eta = document.querySelector(`${sel} .eta`);
      return eta && !eta.hidden && /about/.test(eta.textContent)
        && document.querySelector(`${sel} .seg[data-status="running"]`)?.textContent.startsWith('analyzing');
    }, card(slow.id), { timeout: 20000 });
    await page.waitForSelector(`${card(other.id)} .rate:not([hidden])`);
    await h.sleep(300);

    // Segment widths follow the weights 0.15 : 0.6 : 0.2 : 0.05.
    const widths = await page.$$eval(`${card(slow.id)} .seg`, (segs) => segs.map((s) => s.getBoundingClientRect().width));
    const total = widths.reduce((a, b) => a + b, 0);
    [0.15, 0.6, 0.2, 0.05].forEach((w, i) => {
      assert.ok(Math.abs(widths[i] / total - w) < 0.02, `segment ${i} is ${widths[i] / total} of the strip, not ${w}`);
    });
    assert.match(await h.cardText(page, slow.id, '.eta'), /^about \d+ (s|min) left$/);
    assert.match(await h.cardText(page, slow.id, '.rate'), /^\d+(\.\d)? steps\/s$/);
    assert.match(await h.cardText(page, slow.id, '.counter'), /^\d+ \/ 400 steps$/);
    assert.equal(await h.cardText(page, slow.id, '.stage-pos'), 'stage 2 of 4');
    assert.match(await h.cardText(page, slow.id, '.started'), /^started \d\d:\d\d:\d\d$/);
    await page.setViewportSize({ width: 1280, height: 1040 });
    await h.screenshot(page, 'desktop');
    await h.api('POST', `/v1/jobs/${slow.id}/cancel`);
    await h.api('POST', `/v1/jobs/${other.id}/cancel`);
    await done(page);
  });

  test('360 px wide: no horizontal scrolling, on the list and in the detail view', { timeout: 60000 }, async () => {
    const running = await h.createJob({
      stages: [{ name: 'transcoding-all-video-tracks', weight: 1, steps: 200 }, { name: 'upload', weight: 0.1, steps: 5 }],
      step_ms: 100,
    });
    const page = await open();
    await page.setViewportSize({ width: 360, height: 780 });
    await h.waitForBadge(page, running.id, 'running');
    await page.waitForSelector(`${card(running.id)} .eta:not([hidden])`);
    const widths = () => page.evaluate(() => [document.documentElement.scrollWidth, document.body.scrollWidth]);
    for (const width of await widths()) assert.ok(width <= 360, `the page is ${width} px wide`);
    await page.evaluate(() => document.querySelector('.jobs-panel').scrollIntoView());
    await h.screenshot(page, 'mobile-360');
    await page.evaluate(() => window.scrollTo(0, 0));
    await h.screenshot(page, 'mobile-360-top');
    await page.evaluate(() => document.querySelector('.jobs-panel').scrollIntoView());

    await page.click(`${card(running.id)} .job-title`);
    await page.waitForSelector('#detail-events li');
    for (const width of await widths()) assert.ok(width <= 360, `with the detail open, the page is ${width} px wide`);
    const dialog = await page.$eval('#detail', (d) => [d.scrollWidth, d.clientWidth]);
    assert.ok(dialog[0] <= dialog[1], `the detail view scrolls sideways: ${dialog}`);
    await h.screenshot(page, 'mobile-360-detail');
    await h.api('POST', `/v1/jobs/${running.id}/cancel`);
    await done(page);
  });

  test('hundreds of busy jobs: the page renders at most once per frame, stays responsive, shows each job once', { timeout: 90000 }, async () => {
    const page = await open();
    // Count animation frames, and the tasks that changed the job list (one
    // MutationObserver callback follows each task that touched the DOM).
    await page.evaluate(() => {
      window.__load = { frames: [], mutationTasks: 0 };
      const tick = (t) => { window.__load.frames.push(t); requestAnimationFrame(tick); };
      requestAnimationFrame(tick);
      new MutationObserver(() => { window.__load.mutationTasks += 1; }).observe(
        document.getElementById('jobs'), { subtree: true, childList: true, attributes: true, characterData: true },
      );
    });
    const count = 200;
    // 200 jobs, each reporting a step every 10 ms: up to 100 updates per second each.
    const jobs = await Promise.all(Array.from({ length: count }, () => h.createJob({
      stages: [{ name: 'busy', weight: 1, steps: 300 }], step_ms: 10,
    })));
    const ids = jobs.map((j) => j.id);
    await h.sleep(1500);
    // Input is answered while the jobs run: time from a filter change to the list showing it, in the page.
    const reaction = await page.evaluate(() => new Promise((resolve) => {
      const select = document.getElementById('filter-status');
      const started = performance.now();
      select.value = 'live';
      select.dispatchEvent(new Event('change'));
      const check = () => {
        const shown = [...document.querySelectorAll('li.job:not([hidden])')];
        if (shown.every((li) => ['queued', 'running', 'cancelling'].includes(li.dataset.status))) {
          resolve(performance.now() - started);
        } else {
          requestAnimationFrame(check);
        }
      };
      requestAnimationFrame(check);
    }));
    await page.selectOption('#filter-status', '');
    await page.waitForFunction((all) => all.every((id) => {
      const li = document.querySelector(`li.job[data-id="${id}"]`);
      return li && li.dataset.status === 'completed';
    }), ids, { timeout: 60000, polling: 250 });
    const stats = await page.evaluate(() => {
      const f = window.__load.frames;
      let longest = 0;
      for (let i = 1; i < f.length; i += 1) longest = Math.max(longest, f[i] - f[i - 1]);
      return { frames: f.length, fps: f.length / ((f.at(-1) - f[0]) / 1000), longest, mutationTasks: window.__load.mutationTasks };
    });
    console.log(`# load: ${stats.fps.toFixed(0)} frames/s, longest frame ${stats.longest.toFixed(0)} ms, `
      + `${stats.mutationTasks} DOM-changing tasks in ${stats.frames} frames, filter applied in ${reaction.toFixed(0)} ms`);

    const onPage = await page.$$eval('li.job', (lis) => lis.map((li) => li.dataset.id));
    assert.equal(onPage.length, new Set(onPage).size, 'no job is shown twice');
    const full = await page.$$eval('li.job[data-status="completed"] [role="progressbar"]',
      (bars) => bars.filter((b) => b.getAttribute('aria-valuenow') === '100').length);
    assert.ok(full >= count);
    // Batching: the list changes in animation frames, not once per event
    // (tens of thousands arrived); a few more come from the filter and fetches.
    assert.ok(stats.mutationTasks <= stats.frames + 20, `${stats.mutationTasks} DOM-changing tasks for ${stats.frames} frames`);
    assert.ok(stats.fps >= 5, `only ${stats.fps.toFixed(1)} frames per second`);
    assert.ok(stats.longest < 2000, `the page froze for ${stats.longest.toFixed(0)} ms`);
    assert.ok(reaction < 2000, `the filter took ${reaction.toFixed(0)} ms to apply`);
    await done(page);
  });

  test('after a server crash and restart the page says it is reconnecting, shows the interrupted job with its hint, then jobs created since', { timeout: 90000, skip: !h.canRestartServer() && 'needs ui/run-tests.sh to restart the server' }, async () => {
    const page = await open();
    const before = await h.createJob({ stages: [{ name: 'early', weight: 1, steps: 3 }], step_ms: 0 });
    await h.waitForBadge(page, before.id, 'completed');
    const orphan = await h.createJob({ stages: [{ name: 'interrupted', weight: 1, steps: 100 }], step_ms: 200 });
    await h.waitForBadge(page, orphan.id, 'running');
    const shownBefore = await page.$$eval('li.job', (lis) => lis.length);

    // A crash: the running job's terminal event never comes.
    await h.stopServer('SIGKILL');
    await page.waitForSelector('#conn[data-state="reconnecting"]');
    assert.equal(await page.textContent('#conn-text'), 'Reconnecting…');
    await page.waitForSelector('#banner:not([hidden])');
    assert.match(await page.textContent('#banner'), /Reconnecting…/);
    await h.screenshot(page, 'reconnecting');
    // Jobs stay on the page while the server is away.
    assert.ok(await page.isVisible(card(before.id)));

    await h.startServer();
    // One job that finishes before the page is back, one that is still running.
    const quick = await h.createJob({ stages: [{ name: 'quick', weight: 1, steps: 3 }], step_ms: 0 });
    await h.waitForJobEnd(quick.id);
    await page.waitForSelector('#conn[data-state="live"]', { timeout: 20000 });
    const slow = await h.createJob({ stages: [{ name: 'after', weight: 1, steps: 20 }], step_ms: 50 });
    await h.waitForBadge(page, quick.id, 'completed', 10000);
    await h.waitForBadge(page, slow.id, 'running', 10000);
    await h.waitForBadge(page, slow.id, 'completed', 20000);
    assert.ok(await page.isHidden('#banner'));
    assert.equal(await page.textContent('#conn-text'), 'Live');
    const ids = await page.$$eval('li.job', (lis) => lis.map((li) => li.dataset.id));
    assert.equal(ids.length, new Set(ids).size, 'no job is shown twice');
    assert.ok(ids.length >= shownBefore + 2, 'jobs from before the restart are still shown');
    assert.ok(ids.indexOf(slow.id) < ids.indexOf(before.id), 'newest first');
    // The job that was running ends failed, interrupted, not left "running"
    // forever: its card says why and offers a retry.
    await h.waitForBadge(page, orphan.id, 'failed', 10000);
    assert.equal(await h.cardText(page, orphan.id, '.err-code'), 'interrupted');
    assert.match(await h.cardText(page, orphan.id, '.err-hint'), /stopped unexpectedly.*Retry runs it again/);
    assert.ok(await page.isVisible(`${card(orphan.id)} .err-hint`));
    assert.ok(await page.isVisible(`${card(orphan.id)} button.retry`));
    assert.ok(await page.isHidden(`${card(orphan.id)} button.cancel`));
    await h.screenshot(page, 'interrupted');

    // A restart that lost its database: a job the page saw running is
    // marked lost, not left "running" forever.
    const stuck = await h.createJob({ stages: [{ name: 'forgotten', weight: 1, steps: 100 }], step_ms: 200 });
    await h.waitForBadge(page, stuck.id, 'running');
    await h.stopServer('SIGKILL');
    await page.waitForSelector('#conn[data-state="reconnecting"]');
    for (const suffix of ['', '-wal', '-shm']) fs.rmSync(`${h.OUTPUT_DIR}/jobs.db${suffix}`, { force: true });
    await h.startServer();
    await page.waitForSelector('#conn[data-state="live"]', { timeout: 20000 });
    await page.waitForSelector(`${card(stuck.id)}.gone .badge[data-status="gone"]`);
    assert.equal(await h.cardText(page, stuck.id, '.badge'), 'lost');
    assert.ok(await page.isHidden(`${card(stuck.id)} button.cancel`));
    assert.match(await page.textContent('#summary'), /1 lost/);
    await h.screenshot(page, 'reconnected');
    await done(page);
  });

  test('the page makes no requests outside the server\'s origin', async () => {
    assert.ok(pages.length >= 5);
    assert.ok(requests.some((url) => url === `${BASE_URL}/v1/events` || url.startsWith(`${BASE_URL}/v1/events?`)));
    const foreign = requests.filter((url) => !url.startsWith('data:') && new URL(url).origin !== BASE_URL);
    assert.deepEqual(foreign, []);
  });
});
