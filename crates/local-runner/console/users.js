// User Management: users with roles and the Primary marked, sync switches and roles edited in
// the table and saved together, each user's status with its remediation and message counts,
// "Sync now", and per user: Set Primary, captured mail, purge, remove.

import { api, pathOf } from './api.js';
import { $, currentView, el, failure, go, notice, registerView, run, twoStep, when } from './dom.js';

let users = [];
// Edits not saved yet, by email: { role?, sync_enabled? }.
const edits = new Map();

async function fetchUsers() {
  const status = $('#status-filter').value;
  const all = [];
  let after = null;
  do {
    const query = new URLSearchParams({ limit: '200' });
    if (status) query.set('status', status);
    if (after) query.set('after', after);
    const page = await api('GET', `/users?${query}`);
    all.push(...page.items);
    after = page.next;
  } while (after);
  return all;
}

async function loadUsers() {
  users = await fetchUsers();
  edits.clear();
  render();
}

function edit(user, field, value) {
  const pending = { ...edits.get(user.email) };
  if (value === user[field]) delete pending[field];
  else pending[field] = value;
  if (Object.keys(pending).length) edits.set(user.email, pending);
  else edits.delete(user.email);
  render();
}

function counts(user) {
  const m = user.messages;
  return [m.captured, m.updated, m.deleted, m.skipped].map((n) => el('td', { class: 'number' }, n));
}

function status(user) {
  return el(
    'td',
    { class: 'user-status' },
    el('span', { class: `status-${user.status}` }, user.status),
    failure(user.error),
  );
}

function actions(user) {
  const cell = el('td', { class: 'actions' });
  if (user.role === 'admin' && !user.is_primary) {
    cell.append(el('button', { type: 'button', onclick: () => run(() => setPrimary(user)) }, 'Set Primary'), ' ');
  }
  cell.append(el('button', { type: 'button', onclick: () => go('mail', user.email) }, 'Mail'), ' ');
  cell.append(twoStep('Purge', 'Confirm purge', () => purge(user)), ' ');
  if (!user.is_primary) cell.append(twoStep('Remove', 'Confirm remove', () => remove(user)));
  return cell;
}

function userRow(user) {
  const pending = edits.get(user.email) ?? {};
  const role = pending.role ?? user.role;
  const sync = pending.sync_enabled ?? user.sync_enabled;
  const roleSelect = el(
    'select',
    { 'aria-label': `Role of ${user.email}`, onchange: (e) => edit(user, 'role', e.target.value) },
    ['admin', 'member'].map((r) => el('option', { value: r, selected: r === role }, r)),
  );
  const syncBox = el('input', {
    type: 'checkbox',
    'aria-label': `Sync ${user.email}`,
    checked: sync,
    onchange: (e) => edit(user, 'sync_enabled', e.target.checked),
  });
  return el(
    'tr',
    { 'data-email': user.email, class: edits.has(user.email) ? 'changed' : null },
    el(
      'td',
      {},
      el('span', { class: 'email' }, user.email),
      user.is_primary ? el('span', { class: 'badge primary' }, 'Primary') : null,
      el('div', { class: 'muted' }, user.display_name),
    ),
    el('td', {}, roleSelect),
    el('td', {}, syncBox),
    status(user),
    el('td', {}, user.directory?.user_principal_name ?? '—'),
    ...counts(user),
    el('td', {}, when(user.last_sync_at)),
    actions(user),
  );
}

function render() {
  $('#users tbody').replaceChildren(...users.map(userRow));
  const save = $('#save-users');
  save.disabled = edits.size === 0;
  save.textContent = edits.size ? `Save (${edits.size})` : 'Save';
}

async function save() {
  const byEmail = new Map(users.map((u) => [u.email, u]));
  const roles = [...edits].filter(([, e]) => e.role !== undefined);
  for (const [email, e] of roles) {
    await api('PATCH', `/users/${pathOf(email)}`, { body: { role: e.role }, ifMatch: byEmail.get(email).version });
  }
  const changes = [...edits]
    .filter(([, e]) => e.sync_enabled !== undefined)
    .map(([email, e]) => ({ email, sync_enabled: e.sync_enabled }));
  // The API takes at most 99 rows per request, each request all or nothing.
  for (let i = 0; i < changes.length; i += 99) {
    await api('POST', '/users/sync', { body: { changes: changes.slice(i, i + 99) } });
  }
  const saved = edits.size;
  await loadUsers();
  notice(`Saved changes to ${saved} user(s).`);
}

async function addUser(form) {
  const email = form.email.value.trim();
  await api('POST', '/users', {
    body: { email, display_name: form.display_name.value.trim(), role: form.role.value },
  });
  if (form.sync.checked) await api('POST', '/users/sync', { body: { changes: [{ email, sync_enabled: true }] } });
  form.reset();
  await loadUsers();
  notice(`Added ${email}.`);
}

async function setPrimary(user) {
  await api('PUT', '/primary', { body: { email: user.email } });
  await loadUsers();
  notice(`${user.email} is the Primary user now.`);
}

async function purge(user) {
  let deleted = 0;
  for (;;) {
    const report = await api('POST', `/users/${pathOf(user.email)}/purge`);
    deleted += report.deleted;
    if (report.complete) break;
  }
  await loadUsers();
  notice(`Purged ${user.email}: ${deleted} archived item(s) deleted.`);
}

async function remove(user) {
  await api('DELETE', `/users/${pathOf(user.email)}`, { ifMatch: user.version });
  await loadUsers();
  notice(`Removed ${user.email}.`);
}

/** Whether the admin is in the middle of something a re-render would undo. */
function busy() {
  return edits.size > 0 || document.querySelector('#users button.armed') !== null;
}

/** After "Sync now", show progress for a minute, unless the admin is editing the table. */
function watchSync() {
  const until = Date.now() + 60_000;
  const timer = setInterval(async () => {
    if (Date.now() > until || currentView() !== 'users') return clearInterval(timer);
    if (busy()) return;
    try {
      const fresh = await fetchUsers();
      if (busy()) return;
      users = fresh;
      render();
    } catch {
      clearInterval(timer); // a later Refresh shows the problem
    }
  }, 2000);
}

async function syncNow() {
  const { request_id } = await api('POST', '/sync');
  notice(`Sync requested (${request_id.slice(0, 8)}): each mailbox's run appears under Sync runs as it finishes; statuses and counts update below.`);
  watchSync();
}

registerView('users', loadUsers);

$('#add-user').addEventListener('submit', (event) => {
  event.preventDefault();
  run(() => addUser(event.target));
});
$('#status-filter').addEventListener('change', () => run(loadUsers));
$('#refresh-users').addEventListener('click', () => run(loadUsers));
$('#save-users').addEventListener('click', () => run(save));
$('#sync-now').addEventListener('click', () => run(syncNow));
