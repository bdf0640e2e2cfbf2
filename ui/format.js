// Text for people: times, numbers, durations, ETAs, percentages and a job's
// counter and rate, as the cards and the detail view show them.

import { TERMINAL } from './status.js';

export const pad = (n, width = 2) => String(n).padStart(width, '0');
// UUIDv7 ids start with their creation time, so jobs created together share
// a prefix; the random tail tells them apart.
export const shortId = (id) => id.slice(-8);

export function clockTime(iso) {
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
export function formatEta(seconds) {
  if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return '';
  if (seconds < 1) return 'less than 1 s left';
  if (seconds < 90) return `about ${Math.round(seconds)} s left`;
  if (seconds < 90 * 60) return `about ${Math.round(seconds / 60)} min left`;
  const hours = seconds / 3600;
  return `about ${hours < 10 ? hours.toFixed(1).replace(/\.0$/, '') : Math.round(hours)} h left`;
}

export function formatDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '';
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

/** Whole percent shown for a job: 100 only once it has completed. */
export function percentOf(job) {
  if (job.status === 'completed') return 100;
  const p = Number.isFinite(job.progress) ? job.progress : 0;
  return Math.max(0, Math.min(99, Math.floor(p * 100)));
}

export function counterText(stage) {
  if (!stage) return '';
  const unit = stage.unit ? ` ${stage.unit}` : '';
  if (stage.current == null) return '';
  if (stage.total == null) return `${formatNumber(stage.current)}${unit}`;
  return `${formatNumber(stage.current)} / ${formatNumber(stage.total)}${unit}`;
}

export function rateText(job) {
  if (job.rate == null || !Number.isFinite(job.rate) || TERMINAL.has(job.status)) return '';
  const unit = job.stage && job.stage.unit ? job.stage.unit : 'units';
  return `${formatNumber(job.rate)} ${unit}/s`;
}

export function compactJson(value, max) {
  let text;
  try {
    text = JSON.stringify(value);
  } catch {
    text = String(value);
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
