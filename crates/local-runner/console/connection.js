// Connection Settings (the two switches, saved with If-Match) and My Connection (status,
// activate, verify, delete).

import { api } from './api.js';
import { $, el, failure, notice, registerView, run, when } from './dom.js';

let settingsVersion = null;

async function loadSettings() {
  const { settings, org_status: status } = await api('GET', '/integration');
  const form = $('#settings-form');
  form.use_service_account.checked = settings.use_service_account;
  form.read_only.checked = settings.read_only;
  settingsVersion = settings.version;
  $('#settings-confirm').hidden = true;
  $('#org-status').replaceChildren(
    el('dt', {}, 'Users whose sync is on'), el('dd', { id: 'org-users-total' }, status.users_total),
    el('dt', {}, 'Of those in error'), el('dd', { id: 'org-users-in-error' }, status.users_in_error),
    el('dt', {}, 'Alarm'), el('dd', {}, status.alarm ? 'yes — 20 % or more of them are in error' : 'no'),
  );
}

async function saveSettings(confirm) {
  const form = $('#settings-form');
  const body = { use_service_account: form.use_service_account.checked, read_only: form.read_only.checked };
  if (confirm) body.confirm = true;
  try {
    await api('PATCH', '/integration/settings', { body, ifMatch: settingsVersion });
  } catch (e) {
    // Switching off while connected needs a second, explicit yes.
    if (e.status === 409 && e.problem?.type?.endsWith('/precondition-failed') && !body.use_service_account) {
      $('#settings-confirm').hidden = false;
    }
    throw e;
  }
  await loadSettings();
  notice('Connection Settings saved.');
}

function row(term, value, id) {
  return [el('dt', {}, term), el('dd', { id }, value ?? '—')];
}

function showConnection(c) {
  const account = c.granted_by
    ? `${c.granted_by.user_principal_name ?? '(no UPN)'} — object id ${c.granted_by.object_id}`
    : null;
  $('#connection-details').replaceChildren(
    ...row('Status', c.status, 'connection-status'),
    ...row('Tenant', c.tenant_id, 'connection-tenant'),
    ...row('App registration', c.app),
    ...row('Activated by', c.activated_by),
    ...row('Consent granted by', account, 'connection-granted-by'),
    ...row('Granted at', c.granted_at && when(c.granted_at)),
    ...row('Last verified', c.last_verified_at && when(c.last_verified_at)),
  );
  const box = $('#connection-error');
  box.replaceChildren(...(c.error ? [el('h3', {}, 'Why it is not connected'), failure(c.error)] : []));
  box.hidden = !c.error;
  $('#delete-confirm').hidden = true;
}

async function loadConnection() {
  showConnection((await api('GET', '/integration')).connection);
}

async function activate() {
  const { consent_url: url } = await api('POST', '/integration/connection/activate');
  // Only ever send the browser on to a web page (Microsoft's sign-in), never a script URL.
  if (!/^https?:$/.test(new URL(url).protocol)) throw new Error(`unexpected consent URL ${url}`);
  notice('Sending you to Microsoft to sign in and grant consent…');
  window.location.assign(url);
}

async function verify() {
  showConnection(await api('POST', '/integration/connection/verify'));
  notice('Verified with Microsoft.');
}

async function deleteConnection() {
  showConnection(await api('DELETE', '/integration/connection'));
  notice('Connection deleted. Activate it again to resume the sync.');
}

registerView('settings', loadSettings);
registerView('connection', loadConnection);

$('#settings-form').addEventListener('submit', (event) => {
  event.preventDefault();
  run(() => saveSettings(false));
});
$('#settings-confirm-button').addEventListener('click', () => run(() => saveSettings(true)));
$('#activate').addEventListener('click', () => run(activate));
$('#verify').addEventListener('click', () => run(verify));
$('#delete-connection').addEventListener('click', () => {
  $('#delete-confirm').hidden = false;
});
$('#delete-cancel').addEventListener('click', () => {
  $('#delete-confirm').hidden = true;
});
$('#delete-confirm-button').addEventListener('click', () => run(deleteConnection));
