// The API client: every URL the page uses, the requests it sends, and how
// it reads their answers (JSON bodies, problem+json details). Knows nothing
// about the page; label filters come in as [key, value] pairs.

import { labelQuery } from './labels.js';

const ACCEPT_JSON = { accept: 'application/json' };

async function getJson(url) {
  const response = await fetch(url, { headers: ACCEPT_JSON });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.json();
}

/** The body of an answer as JSON, or null when it has none. */
export async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** One line for a failed answer: its problem detail when it has one. */
export function problemText(response, body) {
  if (body && typeof body.detail === 'string' && body.detail) return body.detail;
  if (body && typeof body.title === 'string') return `${response.status} ${body.title}`;
  return `${response.status} ${response.statusText || 'error'}`;
}

export const getKinds = () => getJson('/v1/kinds');

/** `&label=…` for the pairs, or nothing. */
const andLabels = (pairs) => (pairs.length ? `&${labelQuery(pairs)}` : '');

/** The newest `limit` jobs with every label of `pairs`, finished or not. */
export const getRecentJobs = (limit, pairs) => getJson(`/v1/jobs?limit=${limit}${andLabels(pairs)}`);

export const getActiveJobs = (pairs) => getJson(
  `/v1/jobs?status=queued&status=running&status=cancelling&limit=1000${andLabels(pairs)}`,
);

export const getJob = (id) => fetch(`/v1/jobs/${encodeURIComponent(id)}`, { headers: ACCEPT_JSON });

export const postJob = (kind, params, labels) => fetch('/v1/jobs', {
  method: 'POST',
  headers: { 'content-type': 'application/json', ...ACCEPT_JSON },
  body: JSON.stringify({ kind, params, labels }),
});

export const postCancel = (id) => fetch(`/v1/jobs/${encodeURIComponent(id)}/cancel`, {
  method: 'POST',
  headers: ACCEPT_JSON,
});

export const postRetry = (id) => fetch(`/v1/jobs/${encodeURIComponent(id)}/retry`, {
  method: 'POST',
  headers: ACCEPT_JSON,
});

/**
 * The all-jobs stream of the jobs with every label of `pairs`. A fresh
 * EventSource cannot set Last-Event-ID itself; the query parameter carries
 * it (the browser's own reconnects send the header, which wins).
 */
export function allEventsUrl(lastEventId, pairs) {
  const query = [labelQuery(pairs)];
  if (lastEventId != null) query.push(`last_event_id=${encodeURIComponent(lastEventId)}`);
  const text = query.filter(Boolean).join('&');
  return text ? `/v1/events?${text}` : '/v1/events';
}

export const jobEventsUrl = (id) => `/v1/jobs/${encodeURIComponent(id)}/events`;
