// The console's entry: signing in with a development token, the tabs, and landing back from
// Microsoft on /settings/connection (the consent callback's front-end page) in My Connection.

import { api, signIn, signOut, storedIdentity } from './api.js';
import { $, go, notice, run, showProblem } from './dom.js';
import './connection.js';
import './users.js';
import './runs.js';
import './mail.js';

const landed = window.location.pathname === '/settings/connection';

function showSignedIn(me, org) {
  const roles = [me.role, me.is_primary ? 'Primary' : null].filter(Boolean).join(', ');
  $('#whoami-text').textContent = `Signed in as ${me.email} (${org}) — ${roles}`;
  $('#whoami').hidden = false;
  $('#signin').hidden = true;
  $('#tabs').hidden = false;
}

async function start(org, email, view) {
  await signIn(org, email);
  let me;
  try {
    me = await api('GET', '/me');
  } catch (e) {
    signOut(); // an email the org does not know gets nothing: stay signed out
    throw e;
  }
  showSignedIn(me, org);
  await go(view);
}

$('#signin').addEventListener('submit', (event) => {
  event.preventDefault();
  const form = event.target;
  run(() => start(form.org.value.trim(), form.email.value.trim(), landed ? 'connection' : 'settings'));
});

$('#signout').addEventListener('click', () => {
  signOut();
  window.location.assign('/console');
});

for (const tab of document.querySelectorAll('#tabs button')) {
  tab.addEventListener('click', () => go(tab.dataset.view));
}

// Back from Microsoft (or a reload): the same person, with a fresh token.
const stored = storedIdentity();
if (stored?.org && stored?.email) {
  $('#signin').org.value = stored.org;
  $('#signin').email.value = stored.email;
  start(stored.org, stored.email, landed ? 'connection' : 'settings').catch(showProblem);
} else if (landed) {
  notice('Sign in to see My Connection.');
}
