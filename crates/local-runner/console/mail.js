// A user's captured mail: the list (newest first, no bodies) and one message with its body.
// The body is the sender's markup: it is shown in a sandboxed frame (no scripts, an opaque
// origin) through `srcdoc`, behind a policy that loads nothing, so no remote content either.

import { api, pathOf } from './api.js';
import { $, el, go, registerView, run, when } from './dom.js';

const BODY_POLICY =
  '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; img-src data:">';

let owner = null;
let next = null;

function address(a) {
  if (!a) return '—';
  return a.name && a.address ? `${a.name} <${a.address}>` : (a.address ?? a.name ?? '—');
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The frame's whole document: the policy first (the parser puts it in <head>), then the body. */
export function frameDocument(body) {
  if (!body) return `${BODY_POLICY}<p><em>No body is stored for this message.</em></p>`;
  if (body.content_type === 'html') return `${BODY_POLICY}${body.content}`;
  return `${BODY_POLICY}<pre style="white-space: pre-wrap; font: 14px/1.4 monospace">${escapeHtml(body.content)}</pre>`;
}

function messageRow(m) {
  const open = el('button', { type: 'button', class: 'link', onclick: () => go('message', owner, m.id) }, m.subject || '(no subject)');
  return el(
    'tr',
    { 'data-id': m.id, class: m.state === 'removed' ? 'muted' : null },
    el('td', {}, when(m.received_at ?? m.removed_at)),
    el('td', {}, m.folder, m.state === 'removed' ? ' (removed)' : ''),
    el('td', {}, address(m.from)),
    el('td', { class: 'subject' }, open),
    el('td', { class: 'preview' }, m.preview ?? ''),
  );
}

async function more(reset) {
  const query = new URLSearchParams({ limit: '25' });
  const folder = $('#folder-filter').value;
  if (folder) query.set('folder', folder);
  if ($('#include-removed').checked) query.set('include_removed', 'true');
  if (!reset && next) query.set('after', next);
  const page = await api('GET', `/users/${pathOf(owner)}/messages?${query}`);
  const rows = page.items.map(messageRow);
  if (reset) $('#messages tbody').replaceChildren(...rows);
  else $('#messages tbody').append(...rows);
  next = page.next;
  $('#more-messages').hidden = !next;
}

async function loadMail(email) {
  if (email) owner = email;
  $('#mail-owner').textContent = owner;
  await more(true);
}

async function loadMessage(email, id) {
  const m = await api('GET', `/users/${pathOf(email)}/messages/${encodeURIComponent(id)}`);
  $('#message-subject').textContent = m.subject || '(no subject)';
  const list = (as) => (as.length ? as.map(address).join(', ') : '—');
  $('#message-headers').replaceChildren(
    ...[
      ['From', address(m.from)],
      ['To', list(m.to)],
      ['Cc', list(m.cc)],
      ['Received', when(m.received_at)],
      ['Folder', m.folder],
      ['State', m.state],
    ].flatMap(([term, value]) => [el('dt', {}, term), el('dd', {}, value)]),
  );
  const note = $('#message-note');
  note.textContent = m.body?.truncated ? 'The body was cut to fit the archive; this is its beginning.' : '';
  note.hidden = !m.body?.truncated;
  $('#message-body').srcdoc = frameDocument(m.body);
}

registerView('mail', loadMail);
registerView('message', loadMessage);

$('#folder-filter').addEventListener('change', () => run(() => more(true)));
$('#include-removed').addEventListener('change', () => run(() => more(true)));
$('#more-messages').addEventListener('click', () => run(() => more(false)));
$('#back-to-users').addEventListener('click', () => go('users'));
$('#back-to-mail').addEventListener('click', () => go('mail'));
