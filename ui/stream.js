// The all-jobs event stream: one EventSource on /v1/events that carries
// every change of every job (with the label filter's labels), its
// reconnects and resumes, and the connection status shown in the top bar
// (and, after a longer outage, the banner). A new label filter replaces the
// stream with one for the new labels: the page keeps one stream.
//
// The browser reconnects by itself and sends Last-Event-ID, so the server
// replays only what changed while we were away. When the browser gives up
// (a non-200 answer), we reconnect with backoff and resume from the last id.
// Every (re)connect then catches up on what the stream does not replay.

import { allEventsUrl } from './api.js';
import { $, setText } from './dom.js';
import { JOB_EVENTS } from './status.js';
import { queueRaw, state } from './store.js';
import { ensureSession } from './session.js';
import { syncWithServer } from './sync.js';

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

export function connect() {
  clearTimeout(conn.retryTimer);
  const source = new EventSource(allEventsUrl(state.lastEventId, state.filter.labels));
  conn.source = source;
  source.onopen = () => {
    conn.opened = true;
    conn.backoff = 1000;
    setConnection('live');
    syncWithServer();
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      // A non-200 answer (such as 503 at the stream limit, or 401 once the
      // session has expired) makes the browser give up for good: retry
      // ourselves, with backoff, signing in again if need be.
      source.close();
      conn.source = null;
      conn.retryTimer = setTimeout(
        () => ensureSession().then(connect, connect),
        conn.backoff * (1 + Math.random() / 4),
      );
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

/**
 * Replaces the stream with one for the current label filter, from a fresh
 * start (snapshots of the live jobs it shows), not a resume: the earlier
 * stream did not show all of them.
 */
export function reconnect() {
  if (conn.source) conn.source.close();
  conn.source = null;
  state.lastEventId = null;
  setConnection(conn.opened ? 'reconnecting' : 'connecting');
  connect();
}
