// jobcast dashboard: a live view of every job, built on the public API only.
//
// - One EventSource on /v1/events carries every change of every job. The
//   browser reconnects it by itself and sends Last-Event-ID, so the server
//   replays only what changed while we were away.
// - State is kept by job id; a state whose `seq` is not newer than the one we
//   hold is ignored, so replays and overlapping sources (stream, list, cancel
//   answers) never duplicate a job or move it backwards.
// - Events only mark jobs dirty; the DOM is updated at most once per
//   animation frame, touching only the cards that changed.
'use strict';

(() => {
  const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
  const LIVE = new Set(['queued', 'running', 'cancelling']);
  const JOB_EVENTS = ['snapshot', 'progress', 'completed', 'failed', 'cancelled'];
  /** Finished jobs beyond this many are dropped from the page, oldest first. */
  const MAX_JOBS = 1000;
  /** How many finished jobs the page loads when it (re)connects. */
  const RECENT_LIMIT = 200;
  /** Raw events kept in the detail view. */
  const MAX_DETAIL_EVENTS = 500;

  const $ = (id) => document.getElementById(id);

  const state = {
    /** id → the newest job state we have. */
    jobs: new Map(),
    /** Ids of jobs the server no longer knows (it restarted, or forgot them). */
    gone: new Set(),
    /** Ids whose cancel request has not been answered yet. */
    cancelPending: new Set(),
    /** id → a short note shown on the card (cancel outcome, errors). */
    notes: new Map(),
    /** Kinds from /v1/kinds, by name. */
    kinds: new Map(),
    /** Every kind seen, for the kind filter. */
    kindsSeen: new Set(),
    filter: { status: '', kind: '' },
    /** The server-wide id of the last event received, for manual resumes. */
    lastEventId: null,
  };

  // ---------------------------------------------------------------- state

  const dirty = new Set();
  let filtersDirty = true;
  let frameRequested = false;

  function schedule() {
    if (!frameRequested) {
      frameRequested = true;
      requestAnimationFrame(render);
    }
  }

  function markDirty(id) {
    dirty.add(id);
    schedule();
  }

  /** Takes `job` if it is newer than what we hold. Returns whether it was. */
  function applyJob(job) {
    if (!job || typeof job.id !== 'string' || typeof job.seq !== 'number') return false;
    const held = state.jobs.get(job.id);
    if (held && job.seq <= held.seq) return false;
    state.jobs.set(job.id, job);
    state.gone.delete(job.id);
    if (!state.kindsSeen.has(job.kind)) {
      state.kindsSeen.add(job.kind);
      filtersDirty = true;
    }
    if (detail.id === job.id) detail.dirty = true;
    markDirty(job.id);
    return true;
  }

  /**
   * id → the newest raw state from the all-jobs stream, not yet parsed. A
   * busy job sends many states per frame; only the last one is parsed. This
   * is safe because ids on one connection strictly increase, so a later
   * event is a newer state. The id is read from the head of the text when the
   * server put it first (it does); any other shape is parsed at once.
   */
  const rawStates = new Map();
  const ID_HEAD = /^\{"id":"([0-9a-f-]{36})",/;

  function queueRaw(data) {
    const head = ID_HEAD.exec(data.slice(0, 48));
    if (head) {
      rawStates.set(head[1], data);
      schedule();
      return;
    }
    try {
      applyJob(JSON.parse(data));
    } catch {
      // Not a job: nothing to show.
    }
  }

  function flushRawStates() {
    for (const data of rawStates.values()) {
      try {
        applyJob(JSON.parse(data));
      } catch {
        // Not a job: nothing to show.
      }
    }
    rawStates.clear();
  }

  // ---------------------------------------------------------------- formatting

  const pad = (n, width = 2) => String(n).padStart(width, '0');
  // UUIDv7 ids start with their creation time, so jobs created together share
  // a prefix; the random tail tells them apart.
  const shortId = (id) => id.slice(-8);

  function clockTime(iso) {
    if (!iso) return '';
    const t = new Date(iso);
    if (Number.isNaN(t.getTime())) return iso;
    const hms = `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
    const now = new Date();
    if (t.toDateString() === now.toDateString()) return hms;
    return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${hms}`;
  }

  const grouped = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

  function formatNumber(value) {
    if (!Number.isFinite(value)) return '';
    if (Math.abs(value) < 10 && !Number.isInteger(value)) return value.toFixed(1);
    const whole = Math.round(value);
    return Math.abs(whole) < 1000 ? String(whole) : grouped.format(whole);
  }

  /** "about 12 s left", "about 4 min left", "about 1.5 h left". */
  function formatEta(seconds) {
    if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return '';
    if (seconds < 1) return 'less than 1 s left';
    if (seconds < 90) return `about ${Math.round(seconds)} s left`;
    if (seconds < 90 * 60) return `about ${Math.round(seconds / 60)} min left`;
    const hours = seconds / 3600;
    return `about ${hours < 10 ? hours.toFixed(1).replace(/\.0$/, '') : Math.round(hours)} h left`;
  }

  function formatDuration(ms) {
    if (!Number.isFinite(ms) || ms < 0) return '';
    const s = ms / 1000;
    if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  }

  /** Whole percent shown for a job: 100 only once it has completed. */
  function percentOf(job) {
    if (job.status === 'completed') return 100;
    const p = Number.isFinite(job.progress) ? job.progress : 0;
    return Math.max(0, Math.min(99, Math.floor(p * 100)));
  }

  function counterText(stage) {
    if (!stage) return '';
    const unit = stage.unit ? ` ${stage.unit}` : '';
    if (stage.current == null) return '';
    if (stage.total == null) return `${formatNumber(stage.current)}${unit}`;
    return `${formatNumber(stage.current)} / ${formatNumber(stage.total)}${unit}`;
  }

  function rateText(job) {
    if (job.rate == null || !Number.isFinite(job.rate) || TERMINAL.has(job.status)) return '';
    const unit = job.stage && job.stage.unit ? job.stage.unit : 'units';
    return `${formatNumber(job.rate)} ${unit}/s`;
  }

  function compactJson(value, max) {
    let text;
    try {
      text = JSON.stringify(value);
    } catch {
      text = String(value);
    }
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  }

  function problemText(response, body) {
    if (body && typeof body.detail === 'string' && body.detail) return body.detail;
    if (body && typeof body.title === 'string') return `${response.status} ${body.title}`;
    return `${response.status} ${response.statusText || 'error'}`;
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }

  // ---------------------------------------------------------------- job cards

  /** id → { li, parts…, stagesKey } */
  const views = new Map();
  const list = $('jobs');

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function setAttr(node, name, value) {
    if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  }

  function setHidden(node, hidden) {
    if (node.hidden !== hidden) node.hidden = hidden;
  }

  function createView(job) {
    const li = el('li', 'job');
    li.dataset.id = job.id;

    const top = el('div', 'job-top');
    const badge = el('span', 'badge');
    const title = el('button', 'job-title');
    title.type = 'button';
    title.setAttribute('aria-haspopup', 'dialog');
    const kind = el('span', 'kind', job.kind);
    const jid = el('span', 'jid', shortId(job.id));
    jid.title = job.id;
    title.append(kind, jid);
    const times = el('span', 'times');
    const started = el('span', 'started');
    const finished = el('span', 'finished');
    times.append(started, finished);
    const cancel = el('button', 'cancel', 'Cancel');
    cancel.type = 'button';
    cancel.setAttribute('aria-label', `Cancel ${job.kind} job ${shortId(job.id)}`);
    top.append(badge, title, times, cancel);

    const barRow = el('div', 'bar-row');
    const bar = el('div', 'bar');
    bar.setAttribute('role', 'progressbar');
    bar.setAttribute('aria-valuemin', '0');
    bar.setAttribute('aria-valuemax', '100');
    bar.setAttribute('aria-label', `Progress of ${job.kind} job ${shortId(job.id)}`);
    const fill = el('div', 'fill');
    bar.append(fill);
    const pct = el('span', 'pct');
    pct.setAttribute('aria-hidden', 'true');
    barRow.append(bar, pct);

    const segments = el('ol', 'segments');
    segments.setAttribute('aria-label', 'Stages');

    const stageLine = el('p', 'stage-line');
    const stageName = el('span', 'stage-name');
    const stagePos = el('span', 'stage-pos');
    const counter = el('span', 'counter');
    const rate = el('span', 'rate');
    const eta = el('span', 'eta');
    stageLine.append(stageName, stagePos, counter, rate, eta);

    const message = el('p', 'message');

    const errorBox = el('div', 'error-box');
    const errCode = el('code', 'err-code');
    const errMsg = el('span', 'err-msg');
    const errStage = el('span', 'err-stage');
    errorBox.append(errCode, errMsg, errStage);

    const result = el('p', 'result');
    const note = el('p', 'note');
    note.setAttribute('role', 'status');

    li.append(top, barRow, segments, stageLine, message, errorBox, result, note);
    const view = {
      li, badge, started, finished, cancel, bar, fill, pct, segments, stageLine,
      stageName, stagePos, counter, rate, eta, message, errorBox, errCode, errMsg,
      errStage, result, note, stagesKey: null, segViews: [],
    };
    views.set(job.id, view);
    insertInOrder(li, job.id);
    return view;
  }

  /** Newest first: UUIDv7 ids sort by creation time. */
  function insertInOrder(li, id) {
    let child = list.firstElementChild;
    while (child && child.dataset.id > id) child = child.nextElementSibling;
    list.insertBefore(li, child);
  }

  function renderSegments(view, job) {
    const stages = Array.isArray(job.stages) ? job.stages : [];
    const key = stages.map((s) => `${s.name}\u0000${s.weight}`).join('\u0001');
    if (key !== view.stagesKey) {
      view.stagesKey = key;
      view.segments.replaceChildren();
      view.segViews = [];
      const total = stages.reduce((sum, s) => sum + (Number(s.weight) > 0 ? Number(s.weight) : 0), 0);
      for (const s of stages) {
        const weight = Number(s.weight) > 0 ? Number(s.weight) : 0;
        const seg = el('li', 'seg');
        // Widths follow the weights; with no positive weight, stages share equally.
        // (Normalised: flex-grow factors summing below 1 would leave a gap.)
        seg.style.flexGrow = String(total > 0 ? weight / total : 1);
        if (total > 0 && weight === 0) seg.classList.add('zero');
        const track = el('span', 'seg-track');
        const segFill = el('span', 'seg-fill');
        track.append(segFill);
        const name = el('span', 'seg-name', s.name);
        const status = el('span', 'visually-hidden');
        seg.append(track, name, status);
        view.segments.append(seg);
        view.segViews.push({ seg, segFill, status, name: s.name, weight });
      }
    }
    // One stage would only repeat the overall bar.
    setHidden(view.segments, stages.length < 2);
    stages.forEach((s, i) => {
      const sv = view.segViews[i];
      if (!sv) return;
      let fraction = 0;
      if (s.status === 'done') fraction = 1;
      else if (job.stage && job.stage.index === i && s.status !== 'pending') {
        const { current, total } = job.stage;
        fraction = total > 0 ? Math.min(1, current / total) : s.status === 'running' ? -1 : 0;
      }
      setAttr(sv.seg, 'data-status', s.status);
      sv.seg.classList.toggle('indeterminate', fraction < 0);
      const scale = `scaleX(${Math.round(Math.max(0, fraction) * 1000) / 1000})`;
      if (sv.segFill.style.transform !== scale) sv.segFill.style.transform = scale;
      setAttr(sv.seg, 'title', `${s.name}: ${s.status} (weight ${s.weight})`);
      setText(sv.status, `: ${s.status}`);
    });
  }

  function renderJob(id) {
    const job = state.jobs.get(id);
    let view = views.get(id);
    if (!job) {
      if (view) {
        view.li.remove();
        views.delete(id);
      }
      return;
    }
    if (!view) view = createView(job);
    const gone = state.gone.has(id);
    const terminal = TERMINAL.has(job.status);

    setAttr(view.li, 'data-status', job.status);
    view.li.classList.toggle('gone', gone);
    // A job the server forgot keeps its last known state, marked as lost.
    setAttr(view.badge, 'data-status', gone ? 'gone' : job.status);
    setText(view.badge, gone ? 'lost' : job.status);
    setAttr(view.badge, 'title', gone ? `last known status: ${job.status}` : '');

    // Times: created while queued, then started; finished with the duration.
    if (job.started_at) setText(view.started, `started ${clockTime(job.started_at)}`);
    else setText(view.started, `created ${clockTime(job.created_at)}`);
    if (job.finished_at) {
      const took = job.started_at ? Date.parse(job.finished_at) - Date.parse(job.started_at) : NaN;
      const tookText = formatDuration(took);
      setText(view.finished, `finished ${clockTime(job.finished_at)}${tookText ? ` (${tookText})` : ''}`);
    } else {
      setText(view.finished, '');
    }
    setHidden(view.finished, !job.finished_at);

    // Cancel: "Cancelling…" from the click until the server answers.
    const pending = state.cancelPending.has(id);
    setHidden(view.cancel, !(pending || (LIVE.has(job.status) && !gone)));
    const cancelling = pending || job.status === 'cancelling';
    setText(view.cancel, cancelling ? 'Cancelling…' : 'Cancel');
    view.cancel.disabled = cancelling;

    // Overall progress.
    const percent = percentOf(job);
    setAttr(view.bar, 'aria-valuenow', String(percent));
    const stageText = job.stage ? `, stage ${job.stage.name}` : '';
    setAttr(view.bar, 'aria-valuetext', `${percent}%, ${job.status}${stageText}`);
    // Fills are scaled rather than resized: a transform needs no layout.
    const fraction = Number.isFinite(job.progress) ? Math.min(1, Math.max(0, job.progress)) : 0;
    const scale = `scaleX(${Math.round(fraction * 1000) / 1000})`;
    if (view.fill.style.transform !== scale) view.fill.style.transform = scale;
    setText(view.pct, `${percent}%`);

    renderSegments(view, job);

    // Current stage with its own counter, rate and ETA.
    const stage = job.stage;
    if (stage) {
      setText(view.stageName, stage.name);
      setText(view.stagePos, stage.count > 1 ? `stage ${stage.index + 1} of ${stage.count}` : '');
      setText(view.counter, counterText(stage));
    } else {
      setText(view.stageName, job.status === 'queued' ? 'waiting to start' : '');
      setText(view.stagePos, '');
      setText(view.counter, '');
    }
    setText(view.rate, gone ? '' : rateText(job));
    setText(view.eta, terminal || gone ? '' : formatEta(job.eta_seconds));
    for (const part of [view.stageName, view.stagePos, view.counter, view.rate, view.eta]) {
      setHidden(part, part.textContent === '');
    }
    setHidden(view.stageLine, view.stageName.textContent === '' && view.counter.textContent === '');

    setText(view.message, job.message || '');
    setHidden(view.message, !job.message);

    const error = job.error;
    if (error) {
      setText(view.errCode, error.code || 'error');
      setText(view.errMsg, error.message || '');
      setText(view.errStage, error.stage ? `in stage ${error.stage}` : '');
      setHidden(view.errStage, !error.stage);
    }
    setAttr(view.errorBox, 'data-kind', job.status);
    setHidden(view.errorBox, !error);

    const hasResult = job.status === 'completed' && job.result != null;
    setText(view.result, hasResult ? `Result: ${compactJson(job.result, 160)}` : '');
    setHidden(view.result, !hasResult);

    let noteText = state.notes.get(id) || '';
    if (gone) noteText = 'The server no longer knows this job (it may have restarted); this is its last known state.';
    setText(view.note, noteText);
    setHidden(view.note, !noteText);

    setHidden(view.li, !matchesFilter(job));
  }

  // ---------------------------------------------------------------- filters and summary

  function matchesFilter(job) {
    const { status, kind } = state.filter;
    if (kind && job.kind !== kind) return false;
    if (!status) return true;
    if (status === 'live') return LIVE.has(job.status) && !state.gone.has(job.id);
    return job.status === status;
  }

  function renderFilters() {
    const select = $('filter-kind');
    const names = [...new Set([...state.kinds.keys(), ...state.kindsSeen])].sort();
    const have = [...select.options].slice(1).map((o) => o.value);
    if (have.join('\u0000') !== names.join('\u0000')) {
      const chosen = select.value;
      select.replaceChildren(new Option('All', ''), ...names.map((n) => new Option(n, n)));
      select.value = names.includes(chosen) ? chosen : '';
    }
    for (const [id, job] of state.jobs) {
      const view = views.get(id);
      if (view) setHidden(view.li, !matchesFilter(job));
    }
  }

  function renderSummary() {
    const counts = { live: 0, completed: 0, failed: 0, cancelled: 0, lost: 0 };
    let shown = 0;
    for (const job of state.jobs.values()) {
      if (state.gone.has(job.id)) counts.lost += 1;
      else if (LIVE.has(job.status)) counts.live += 1;
      else if (counts[job.status] != null) counts[job.status] += 1;
      if (matchesFilter(job)) shown += 1;
    }
    const total = state.jobs.size;
    const parts = [`${total} ${total === 1 ? 'job' : 'jobs'}`, `${counts.live} active`,
      `${counts.completed} completed`, `${counts.failed} failed`, `${counts.cancelled} cancelled`];
    if (counts.lost) parts.push(`${counts.lost} lost`);
    setText($('summary'), parts.join(' · '));
    const empty = $('empty');
    setText(empty, total === 0 ? 'No jobs yet. Start one with the form.' : 'No jobs match these filters.');
    setHidden(empty, shown > 0);
  }

  /** Drops the oldest finished jobs once the page holds more than MAX_JOBS. */
  function evict() {
    if (state.jobs.size <= MAX_JOBS) return;
    const finished = [...state.jobs.values()]
      .filter((job) => TERMINAL.has(job.status) || state.gone.has(job.id))
      .map((job) => job.id)
      .sort();
    for (const id of finished.slice(0, state.jobs.size - MAX_JOBS)) {
      if (id === detail.id) continue;
      state.jobs.delete(id);
      state.gone.delete(id);
      state.notes.delete(id);
      dirty.add(id);
    }
  }

  function render() {
    frameRequested = false;
    flushRawStates();
    evict();
    let changed = dirty.size > 0;
    for (const id of dirty) renderJob(id);
    dirty.clear();
    if (filtersDirty) {
      filtersDirty = false;
      changed = true;
      renderFilters();
    }
    if (changed) renderSummary();
    renderDetail();
  }

  // ---------------------------------------------------------------- connection

  const conn = { source: null, opened: false, retryTimer: null, backoff: 1000, bannerTimer: null };

  function setConnection(kind) {
    const box = $('conn');
    const text = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…' }[kind];
    box.dataset.state = kind;
    setText($('conn-text'), text);
    const banner = $('banner');
    if (kind === 'live') {
      clearTimeout(conn.bannerTimer);
      conn.bannerTimer = null;
      banner.hidden = true;
    } else if (kind === 'reconnecting' && !conn.bannerTimer && banner.hidden) {
      // A brief blip is shown only in the status pill; a longer outage gets a banner.
      conn.bannerTimer = setTimeout(() => {
        banner.textContent = 'Lost the connection to the server. Reconnecting… '
          + 'Jobs show their last known state until it is back.';
        banner.hidden = false;
      }, 1500);
    }
  }

  function connect() {
    clearTimeout(conn.retryTimer);
    // A fresh EventSource cannot set Last-Event-ID itself; the query parameter
    // carries it (the browser's own reconnects send the header, which wins).
    const url = state.lastEventId != null
      ? `/v1/events?last_event_id=${encodeURIComponent(state.lastEventId)}` : '/v1/events';
    const source = new EventSource(url);
    conn.source = source;
    source.onopen = () => {
      conn.opened = true;
      conn.backoff = 1000;
      setConnection('live');
      syncWithServer();
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // A non-200 answer (such as 503 at the stream limit) makes the browser
        // give up for good: retry ourselves, with backoff.
        source.close();
        conn.source = null;
        conn.retryTimer = setTimeout(connect, conn.backoff * (1 + Math.random() / 4));
        conn.backoff = Math.min(conn.backoff * 2, 30000);
      }
      setConnection(conn.opened ? 'reconnecting' : 'connecting');
    };
    const onJobEvent = (event) => {
      if (event.lastEventId) state.lastEventId = event.lastEventId;
      queueRaw(event.data);
    };
    for (const type of JOB_EVENTS) source.addEventListener(type, onJobEvent);
  }

  async function getJson(url) {
    const response = await fetch(url, { headers: { accept: 'application/json' } });
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    return response.json();
  }

  let syncing = false;
  let syncAgain = false;

  /**
   * On every (re)connect: load recent jobs, which the stream does not replay
   * once they have finished, and find jobs we show as active that the server
   * no longer knows (after a restart, their terminal event never comes).
   */
  async function syncWithServer() {
    if (syncing) {
      syncAgain = true;
      return;
    }
    syncing = true;
    try {
      if (state.kinds.size === 0) loadKinds();
      const [recent, active] = await Promise.all([
        getJson(`/v1/jobs?limit=${RECENT_LIMIT}`),
        getJson('/v1/jobs?status=queued&status=running&status=cancelling&limit=1000'),
      ]);
      for (const job of recent.jobs) applyJob(job);
      for (const job of active.jobs) applyJob(job);
      const activeIds = new Set(active.jobs.map((job) => job.id));
      const suspects = [...state.jobs.values()]
        .filter((job) => LIVE.has(job.status) && !activeIds.has(job.id) && !state.gone.has(job.id))
        .map((job) => job.id);
      for (let i = 0; i < suspects.length; i += 8) {
        await Promise.all(suspects.slice(i, i + 8).map(checkJob));
      }
    } catch {
      // The stream's own error handling reports a lost server; the next
      // reconnect syncs again.
    } finally {
      syncing = false;
      if (syncAgain) {
        syncAgain = false;
        syncWithServer();
      }
    }
  }

  async function checkJob(id) {
    const response = await fetch(`/v1/jobs/${encodeURIComponent(id)}`, { headers: { accept: 'application/json' } });
    if (response.status === 404) {
      const job = state.jobs.get(id);
      if (job && LIVE.has(job.status)) {
        state.gone.add(id);
        if (detail.id === id) detail.dirty = true;
        markDirty(id);
      }
    } else if (response.ok) {
      applyJob(await readJson(response));
    }
  }

  // ---------------------------------------------------------------- start form

  const form = {
    kind: $('kind'), params: $('params'), description: $('kind-description'),
    error: $('start-error'), ok: $('start-ok'), button: $('start-button'),
  };

  function showFormMessage(node, text) {
    node.textContent = text;
    node.hidden = !text;
  }

  function fillExample() {
    const kind = state.kinds.get(form.kind.value);
    form.description.textContent = kind && kind.description ? kind.description : '';
    const example = kind && kind.example !== undefined ? kind.example : {};
    form.params.value = JSON.stringify(example, null, 2);
    showFormMessage(form.error, '');
  }

  let kindsLoading = null;

  /** Loads the kinds once at a time; callers share a load in flight. */
  function loadKinds() {
    kindsLoading ??= fetchKinds().finally(() => {
      kindsLoading = null;
    });
    return kindsLoading;
  }

  async function fetchKinds() {
    try {
      const body = await getJson('/v1/kinds');
      const kinds = Array.isArray(body.kinds) ? body.kinds : [];
      state.kinds = new Map(kinds.map((k) => [k.name, k]));
      const chosen = form.kind.value;
      form.kind.replaceChildren(...kinds.map((k) => new Option(k.name, k.name)));
      if (state.kinds.has(chosen)) form.kind.value = chosen;
      form.button.disabled = kinds.length === 0;
      showFormMessage(form.error, '');
      if (!chosen || !state.kinds.has(chosen)) fillExample();
      filtersDirty = true;
      schedule();
    } catch {
      form.button.disabled = true;
      showFormMessage(form.error, 'Could not load the job kinds; retrying when the server is back.');
    }
  }

  async function startJob(event) {
    event.preventDefault();
    showFormMessage(form.error, '');
    showFormMessage(form.ok, '');
    const text = form.params.value.trim();
    let params = null;
    if (text) {
      try {
        params = JSON.parse(text);
      } catch (err) {
        showFormMessage(form.error, `Params are not valid JSON: ${err.message}`);
        form.params.focus();
        return;
      }
    }
    form.button.disabled = true;
    form.button.textContent = 'Starting…';
    try {
      const response = await fetch('/v1/jobs', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({ kind: form.kind.value, params }),
      });
      const body = await readJson(response);
      if (response.ok && body) {
        applyJob(body);
        // An external kind's worker token is in this answer only: show it.
        const token = body.worker_token ? ` Its worker token, shown only now: ${body.worker_token}` : '';
        showFormMessage(form.ok, `Started ${body.kind} job ${shortId(body.id)}.${token}`);
      } else {
        showFormMessage(form.error, problemText(response, body));
      }
    } catch {
      showFormMessage(form.error, 'Could not reach the server.');
    } finally {
      form.button.disabled = false;
      form.button.textContent = 'Start job';
    }
  }

  // ---------------------------------------------------------------- cancel

  async function cancelJob(id) {
    if (state.cancelPending.has(id)) return;
    state.cancelPending.add(id);
    state.notes.delete(id);
    // Immediate feedback on the click itself; the next frame renders the rest.
    const view = views.get(id);
    if (view) {
      view.cancel.textContent = 'Cancelling…';
      view.cancel.disabled = true;
    }
    markDirty(id);
    try {
      const response = await fetch(`/v1/jobs/${encodeURIComponent(id)}/cancel`, {
        method: 'POST',
        headers: { accept: 'application/json' },
      });
      const body = await readJson(response);
      if (response.ok) {
        applyJob(body);
        if (body && body.error && body.error.code === 'cancel_forced') {
          state.notes.set(id, 'The job did not stop in time and was aborted.');
        }
      } else if (response.status === 409 && body && body.job) {
        // The job ended first: it keeps its own outcome.
        applyJob(body.job);
        state.notes.set(id, `The job ${body.job.status} before the cancel took effect.`);
      } else {
        state.notes.set(id, `Cancel failed: ${problemText(response, body)}`);
      }
    } catch {
      state.notes.set(id, 'Cancel failed: could not reach the server.');
    } finally {
      state.cancelPending.delete(id);
      markDirty(id);
    }
  }

  // ---------------------------------------------------------------- detail view

  const detail = {
    id: null, source: null, dirty: false, pending: [], count: 0,
    dialog: $('detail'), events: $('detail-events'), facts: $('detail-facts'),
  };

  function openDetail(id) {
    closeDetailStream();
    detail.id = id;
    detail.dirty = true;
    detail.pending = [];
    detail.count = 0;
    detail.events.replaceChildren();
    $('detail-count').textContent = '';
    const url = `/v1/jobs/${encodeURIComponent(id)}/events`;
    $('detail-url').textContent = `GET ${url}`;
    setStreamState('connecting…');
    const source = new EventSource(url);
    detail.source = source;
    source.onopen = () => setStreamState('streaming');
    source.onerror = () => {
      if (detail.source !== source) return;
      if (source.readyState === EventSource.CLOSED) {
        setStreamState(state.gone.has(id) ? 'closed: the job no longer exists' : 'closed');
      } else {
        setStreamState('reconnecting…');
      }
    };
    const onEvent = (event) => {
      if (detail.source !== source) return;
      detail.pending.push({ type: event.type, id: event.lastEventId, data: event.data, at: new Date() });
      let job = null;
      try {
        job = JSON.parse(event.data);
      } catch {
        // Shown raw all the same.
      }
      if (job) applyJob(job);
      if (TERMINAL.has(event.type)) {
        // The server ends the stream after the terminal event; closing here
        // spares the reconnect that would only be answered 204.
        source.close();
        setStreamState(`ended with ${event.type}`);
      }
      schedule();
    };
    for (const type of JOB_EVENTS) source.addEventListener(type, onEvent);
    if (!detail.dialog.open) detail.dialog.showModal();
    schedule();
  }

  function setStreamState(text) {
    $('detail-stream').textContent = text;
  }

  function closeDetailStream() {
    if (detail.source) detail.source.close();
    detail.source = null;
  }

  function fact(label, value, className) {
    const dt = el('dt', null, label);
    const dd = el('dd', className || null, value);
    return [dt, dd];
  }

  function renderDetail() {
    if (!detail.id || !detail.dialog.open) return;
    const job = state.jobs.get(detail.id);
    if (detail.dirty && job) {
      detail.dirty = false;
      $('detail-title').textContent = `${job.kind} job ${shortId(job.id)}`;
      const rows = [
        ...fact('Id', job.id, 'mono'),
        ...fact('Status', state.gone.has(job.id) ? `${job.status} (no longer on the server)` : job.status),
        ...fact('Progress', `${percentOf(job)}%`),
        ...fact('Seq', String(job.seq), 'mono'),
      ];
      if (job.stage) {
        const counter = counterText(job.stage);
        rows.push(...fact('Stage', `${job.stage.name} (${job.stage.index + 1} of ${job.stage.count})${counter ? `, ${counter}` : ''}`));
      }
      if (job.message) rows.push(...fact('Message', job.message));
      if (rateText(job)) rows.push(...fact('Rate', rateText(job)));
      if (!TERMINAL.has(job.status) && formatEta(job.eta_seconds)) rows.push(...fact('ETA', formatEta(job.eta_seconds)));
      rows.push(...fact('Created', job.created_at || '', 'mono'));
      if (job.started_at) rows.push(...fact('Started', job.started_at, 'mono'));
      if (job.finished_at) rows.push(...fact('Finished', job.finished_at, 'mono'));
      if (job.error) {
        const e = job.error;
        rows.push(...fact('Error', `${e.code}: ${e.message}${e.stage ? ` (stage ${e.stage})` : ''}${e.retryable ? ', retryable' : ''}`, 'err'));
      }
      detail.facts.replaceChildren(...rows);
      $('detail-params').textContent = JSON.stringify(job.params ?? {}, null, 2);
      const hasResult = job.status === 'completed';
      $('detail-result-box').hidden = !hasResult;
      if (hasResult) $('detail-result').textContent = JSON.stringify(job.result, null, 2);
    }
    if (detail.pending.length) {
      const box = detail.events;
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
      const items = detail.pending.map(eventItem);
      detail.pending = [];
      box.append(...items);
      detail.count += items.length;
      while (box.childElementCount > MAX_DETAIL_EVENTS) box.firstElementChild.remove();
      setText($('detail-count'), `${detail.count} ${detail.count === 1 ? 'event' : 'events'}`
        + (detail.count > MAX_DETAIL_EVENTS ? `, the last ${MAX_DETAIL_EVENTS} shown` : ''));
      // Follow new events unless the reader has scrolled up.
      if (atBottom) box.scrollTop = box.scrollHeight;
    }
  }

  /** One raw event: a summary line that opens to the exact `data:` text. */
  function eventItem(ev) {
    const li = el('li', 'event');
    li.dataset.type = ev.type;
    const box = el('details');
    const summary = el('summary', 'ev-head');
    let gist = '';
    try {
      const job = JSON.parse(ev.data);
      const counter = job.stage ? ` · ${job.stage.name} ${counterText(job.stage)}` : '';
      gist = `seq ${job.seq} · ${job.status} · ${percentOf(job)}%${counter}`;
    } catch {
      gist = 'not a job';
    }
    summary.append(el('span', 'ev-type', ev.type), el('span', 'ev-id', `id ${ev.id}`),
      el('span', 'ev-gist', gist),
      el('time', 'ev-at', `${clockTime(ev.at.toISOString())}.${pad(ev.at.getMilliseconds(), 3)}`));
    box.append(summary, el('pre', 'ev-data', ev.data));
    li.append(box);
    return li;
  }

  // ---------------------------------------------------------------- wiring

  list.addEventListener('click', (event) => {
    const li = event.target.closest('li.job');
    if (!li) return;
    const id = li.dataset.id;
    if (event.target.closest('button.cancel')) {
      cancelJob(id);
      return;
    }
    // Selecting text on a card should not open it.
    if (window.getSelection && String(window.getSelection()).length > 0) return;
    openDetail(id);
  });

  $('detail-close').addEventListener('click', () => detail.dialog.close());
  detail.dialog.addEventListener('close', () => {
    closeDetailStream();
    detail.id = null;
  });
  detail.dialog.addEventListener('click', (event) => {
    // A click on the backdrop (outside the dialog's box) closes it.
    if (event.target === detail.dialog) detail.dialog.close();
  });

  $('start-form').addEventListener('submit', startJob);
  form.kind.addEventListener('change', fillExample);
  $('reset-params').addEventListener('click', fillExample);
  $('filter-status').addEventListener('change', (event) => {
    state.filter.status = event.target.value;
    filtersDirty = true;
    schedule();
  });
  $('filter-kind').addEventListener('change', (event) => {
    state.filter.kind = event.target.value;
    filtersDirty = true;
    schedule();
  });

  form.button.disabled = true;
  loadKinds();
  connect();
  renderSummary();
})();
