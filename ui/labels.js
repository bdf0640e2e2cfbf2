// Labels as people type them and as the page shows them: `key=value` pairs
// separated by commas (the label filter, the start form), the chips on a
// card, and the label filter kept in the page's address (`/?label=k=v`), so
// that a link opens the dashboard on "the jobs of project 42".

/**
 * Reads `project=42, env=prod` into [['project', '42'], ['env', 'prod']].
 * Each pair is split at its first `=`; an empty text is no pairs. Throws
 * with a sentence for people when a pair has no `=` or an empty key.
 */
export function parsePairs(text) {
  const pairs = [];
  for (const part of text.split(',')) {
    const pair = part.trim();
    if (!pair) continue;
    const at = pair.indexOf('=');
    if (at <= 0) throw new Error(`"${pair}" is not key=value`);
    pairs.push([pair.slice(0, at).trim(), pair.slice(at + 1).trim()]);
  }
  return pairs;
}

/** The text form of pairs, as parsePairs reads it. */
export const pairsText = (pairs) => pairs.map(([key, value]) => `${key}=${value}`).join(', ');

/** Whether `job` has every label of `pairs`. */
export function hasLabels(job, pairs) {
  const labels = job.labels || {};
  return pairs.every(([key, value]) => Object.hasOwn(labels, key) && labels[key] === value);
}

/** `label=KEY=VALUE` query parameters for pairs, each encoded. */
export const labelQuery = (pairs) => pairs
  .map(([key, value]) => `label=${encodeURIComponent(`${key}=${value}`)}`)
  .join('&');

/** The label filter in the page's address. */
export function pairsFromAddress() {
  return parsePairs(new URLSearchParams(window.location.search).getAll('label').join(','));
}

/** Puts the label filter in the page's address, without a new history entry. */
export function pairsToAddress(pairs) {
  const url = new URL(window.location.href);
  url.searchParams.delete('label');
  for (const [key, value] of pairs) url.searchParams.append('label', `${key}=${value}`);
  window.history.replaceState(null, '', url);
}
