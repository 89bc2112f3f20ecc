// Sync runs: one row per mailbox run, newest first, with counts and the failure if any.

import { api } from './api.js';
import { $, el, failure, registerView, run, when } from './dom.js';

let next = null;

function runRow(r) {
  const m = r.messages;
  return el(
    'tr',
    { 'data-mailbox': r.mailbox },
    el('td', {}, r.mailbox),
    el('td', {}, when(r.started_at)),
    el('td', {}, when(r.finished_at)),
    el('td', { class: 'outcome' }, r.outcome),
    ...[m.captured, m.updated, m.deleted, m.skipped, r.pages].map((n) => el('td', { class: 'number' }, n)),
    el('td', {}, failure(r.error)),
  );
}

async function more(reset) {
  const query = new URLSearchParams({ limit: '50' });
  if (!reset && next) query.set('after', next);
  const page = await api('GET', `/sync/runs?${query}`);
  const rows = page.items.map(runRow);
  if (reset) $('#runs tbody').replaceChildren(...rows);
  else $('#runs tbody').append(...rows);
  next = page.next;
  $('#more-runs').hidden = !next;
}

registerView('runs', () => more(true));
$('#refresh-runs').addEventListener('click', () => run(() => more(true)));
$('#more-runs').addEventListener('click', () => run(() => more(false)));
