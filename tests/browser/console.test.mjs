// The admin guide, walked through the embedded run's console (/console) in headless Debian
// chromium: sign in with a development token, turn the service account on, check the Primary,
// activate (Microsoft's sign-in and consent pages, played by the simulator) and land back on the
// console with the outcome, add and edit users and switch their sync on, "Sync now" until users
// show statuses and counts, the users in error with what to do, the sync runs, a user's
// captured mail and one message (a hostile HTML body must stay inert), and a purge. Every step
// is done by clicking the console; the API is called directly only to read state back for the
// assertions. Each screen is saved to target/browser-screenshots/<nn>-<screen>.png.
//
// Run by scripts/browser-test (one runner for all files, BROWSER_TEST_BASE_URL set). The org may
// start connected (consent.test.mjs runs first): the walk-through deletes and reconnects it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchChromium } from './chromium.mjs';

const BASE = (process.env.BROWSER_TEST_BASE_URL ?? '').replace(/\/$/, '');
const ORG = 'demo';
const ADMIN = 'admin@contoso.com';
const STEP_TIMEOUT_MS = 10_000;
const SYNC_TIMEOUT_MS = 90_000;
const SHOTS = fileURLToPath(new URL('../../target/browser-screenshots/', import.meta.url));

// The demo tenant (crates/ms-sim create_demo) and the org the embedded run seeds from it.
const SYNCED = 'adele.vance@contoso.com'; // a plain mailbox: synced, its mail read
const PURGED = 'diego@contoso.com'; // a mail address that is not the UPN: synced, then purged
const PROMOTED = 'alex.wilber@contoso.com'; // edited: member → admin
const NEWCOMER = 'nobody@contoso.com'; // added here; no such directory user
const IN_ERROR = {
  'patti.fernandez@contoso.com': /Assign an Exchange Online licence/, // unlicensed
  'lee.gu@contoso.com': /not enabled for Exchange Online/, // on-premises
  'grady.archie@contoso.com': /application access policy/, // excluded by policy
  [NEWCOMER]: /Unable to find a user matching nobody@contoso\.com/,
};
const SWITCHED_ON = [SYNCED, PURGED, ...Object.keys(IN_ERROR)];
const BODY_POLICY =
  `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">`;

let token;
let browser;
let page;
let chromium;
let trap; // { server, url, hits: [] }: anything the hostile message manages to load lands here
const pageErrors = [];
let hostileSubject;
let broken = false;

/** node:test runs a file's tests in order; once a step fails the later ones only skip. */
function step(name, fn, timeout = 60_000) {
  test(name, { timeout }, async (t) => {
    if (broken) return t.skip('an earlier step failed');
    try {
      await fn();
    } catch (e) {
      broken = true;
      await shot(`failed-${name.replace(/\W+/g, '-').slice(0, 40)}`).catch(() => {});
      throw e;
    }
  });
}

async function shot(name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function api(path) {
  const res = await fetch(`${BASE}/v1${path}`, {
    headers: { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  });
  const text = await res.text();
  assert.ok(res.ok, `GET ${path} -> ${res.status}: ${text}`);
  return JSON.parse(text);
}

async function apiUsers(query = '') {
  return (await api(`/users?limit=200${query}`)).items;
}

/** Polls `probe` until it returns something truthy; fails with `what` and the last value. */
async function until(probe, what, timeout = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) assert.fail(`${what} (last seen: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const text = async (selector) => ((await page.locator(selector).textContent()) ?? '').trim();
const row = (email) => page.locator(`#users tbody tr[data-email="${email}"]`);
const userStatus = async (email) => (await row(email).locator('.user-status > span').first().textContent())?.trim();
const captured = async (email) => Number(await row(email).locator('td').nth(5).textContent());

/** Waits until the view on screen has loaded (the console marks it `aria-busy` until then). */
async function viewLoaded() {
  await page.locator('section[data-view]:not([hidden]):not([aria-busy])').waitFor();
}

async function tab(name) {
  await page.locator('#tabs button', { hasText: name }).click();
  await viewLoaded();
}

async function noticeMatches(pattern) {
  return until(async () => {
    const notice = await text('#notice');
    return pattern.test(notice) && notice;
  }, `notice ${pattern}`);
}

before(async () => {
  assert.ok(BASE, 'BROWSER_TEST_BASE_URL is set (scripts/browser-test sets it)');
  // The folder holds the screens of the last run only.
  await rm(SHOTS, { recursive: true, force: true });
  await mkdir(SHOTS, { recursive: true });
  const res = await fetch(`${BASE}/_local/token?org=${ORG}&email=${encodeURIComponent(ADMIN)}`);
  token = (await res.json()).access_token;
  assert.ok(token, 'a token to read state back with');

  trap = { hits: [] };
  trap.server = createServer((req, res) => {
    trap.hits.push(req.url);
    res.end('');
  });
  await new Promise((r) => trap.server.listen(0, '127.0.0.1', r));
  trap.url = `http://127.0.0.1:${trap.server.address().port}`;

  // Microsoft's side of the world: a message whose HTML tries to run script and load remote
  // content, delivered to a mailbox the walk-through syncs and reads.
  const { microsoft_simulator: sim } = await (await fetch(`${BASE}/health`)).json();
  hostileSubject = `Quarterly numbers ${Date.now()}`;
  const added = await fetch(`${sim}/_sim/users/${encodeURIComponent(SYNCED)}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      folder: 'inbox',
      message: {
        subject: hostileSubject,
        from: { name: 'Mallory', address: 'mallory@fabrikam.com' },
        to: [{ name: 'Adele Vance', address: SYNCED }],
        received: new Date().toISOString(),
        body_html:
          `<html><head><link rel="stylesheet" href="${trap.url}/css"><script>fetch('${trap.url}/script')</script></head>` +
          `<body><p id="visible" style="color: #036">The numbers are below.</p>` +
          `<img src="${trap.url}/img.png" onerror="fetch('${trap.url}/onerror')">` +
          `<div style="background: url(${trap.url}/bg.png)">chart</div>` +
          `<iframe src="${trap.url}/frame"></iframe></body></html>`,
      },
    }),
  });
  assert.equal(added.status, 200, `the simulator took the message: ${await added.text()}`);

  chromium = await launchChromium({ viewport: { width: 1400, height: 900 } });
  browser = chromium.context;
  browser.setDefaultTimeout(STEP_TIMEOUT_MS);
  page = browser.pages()[0] ?? (await browser.newPage());
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

after(async () => {
  await chromium?.close();
  trap?.server.close();
});

step('sign in with a development token', async () => {
  await page.goto(`${BASE}/console`);
  await page.locator('#signin').waitFor();
  assert.equal(await page.locator('#tabs').isVisible(), false, 'nothing but the sign-in before signing in');
  await shot('01-sign-in');
  await page.locator('#signin input[name="org"]').fill(ORG);
  await page.locator('#signin input[name="email"]').fill(ADMIN);
  await page.locator('#signin button[type="submit"]').click();
  const who = await until(async () => (await text('#whoami-text')) || null, 'signed in');
  assert.match(who, new RegExp(`Signed in as ${ADMIN} \\(${ORG}\\) — admin`));
  assert.equal(await page.locator('#signin').isVisible(), false);
  await viewLoaded();
});

step('Connection Settings: Use Service Account on, Read Only Permissions off', async () => {
  await tab('Connection Settings');
  await page.locator('#org-users-total').waitFor();
  const useServiceAccount = page.locator('#settings-form input[name="use_service_account"]');
  if (!(await useServiceAccount.isChecked())) {
    await useServiceAccount.check();
    await page.locator('#settings-form button[type="submit"]').click();
    await noticeMatches(/Connection Settings saved/);
  }
  assert.ok(await useServiceAccount.isChecked());
  assert.equal(await page.locator('#settings-form input[name="read_only"]').isChecked(), false);
  await shot('02-connection-settings');
  const { settings } = await api('/integration');
  assert.equal(settings.use_service_account, true);
  assert.equal(settings.read_only, false);
});

step('User Management: the Primary is the Global Administrator', async () => {
  await tab('User Management');
  await row(ADMIN).waitFor();
  if ((await row(ADMIN).locator('.badge.primary').count()) === 0) {
    await row(ADMIN).getByRole('button', { name: 'Set Primary' }).click();
    await noticeMatches(/is the Primary user now/);
  }
  assert.equal(await page.locator('#users .badge.primary').count(), 1, 'one Primary');
  assert.equal(await row(ADMIN).locator('.badge.primary').textContent(), 'Primary');
  await shot('03-users');
  const primary = (await apiUsers()).filter((u) => u.is_primary).map((u) => u.email);
  assert.deepEqual(primary, [ADMIN]);
});

step('My Connection: a connection left by an earlier test is deleted first', async () => {
  await tab('My Connection');
  const status = await until(async () => (await text('#connection-status')) || null, 'connection status');
  if (status === 'connected') {
    await page.locator('#delete-connection').click();
    await page.locator('#delete-confirm-button').click();
    await until(async () => (await text('#connection-status')) === 'none', 'deleted');
    await noticeMatches(/Connection deleted/);
  }
  await shot('04-my-connection');
  assert.notEqual((await api('/integration')).connection.status, 'connected');
});

step('Activate: sign in and consent with Microsoft, land back on the console', async () => {
  await page.locator('#activate').click();
  await page.locator('#accounts').waitFor();
  await shot('05-microsoft-sign-in');
  await page.locator(`form[data-action="signin"]:has(input[name="login_hint"][value="${ADMIN}"]) button`).click();
  await page.locator('#permissions').waitFor();
  await shot('06-microsoft-consent');
  await Promise.all([
    page.waitForURL((url) => url.pathname === '/settings/connection', { waitUntil: 'load' }),
    page.locator('form[data-action="accept"] button[type="submit"]').click(),
  ]);
  assert.equal(page.url(), `${BASE}/settings/connection?connection=connected`);
  assert.equal(await text('#outcome'), 'connected');
  assert.match(await text('#outcome-summary'), /^Connected\./);
  // The same admin, signed in again with a fresh token, sees My Connection.
  await until(async () => (await text('#connection-status')) === 'connected', 'My Connection shows connected');
  assert.match(await text('#connection-granted-by'), new RegExp(ADMIN));
  assert.equal(await page.locator('#view-connection').isVisible(), true);
  await shot('07-landed-connected');
  const { connection } = await api('/integration');
  assert.equal(connection.status, 'connected');
  assert.equal(connection.granted_by?.user_principal_name, ADMIN);
});

step('User Management: add and edit users, switch sync on, Save', async () => {
  await tab('User Management');
  await row(ADMIN).waitFor();
  if ((await row(NEWCOMER).count()) > 0) {
    // Left by an earlier run against the same runner: start from scratch.
    await row(NEWCOMER).getByRole('button', { name: 'Remove' }).click();
    await row(NEWCOMER).getByRole('button', { name: 'Confirm remove' }).click();
    await noticeMatches(/Removed/);
  }
  const form = page.locator('#add-user');
  await form.locator('input[name="email"]').fill(NEWCOMER);
  await form.locator('input[name="display_name"]').fill('Nobody Here');
  await form.locator('select[name="role"]').selectOption('member');
  await form.locator('input[name="sync"]').check();
  await form.getByRole('button', { name: 'Add user' }).click();
  await noticeMatches(new RegExp(`Added ${NEWCOMER}`));
  assert.ok(await row(NEWCOMER).locator('input[type="checkbox"]').isChecked(), 'added with sync on');

  await row(PROMOTED).locator('select').selectOption('admin');
  for (const email of SWITCHED_ON) await row(email).locator('input[type="checkbox"]').check();
  assert.equal(await row(PROMOTED).getAttribute('class'), 'changed', 'an unsaved edit is marked');
  await page.locator('#save-users').click();
  await noticeMatches(/Saved changes to \d+ user/);
  assert.equal(await row(PROMOTED).locator('select').inputValue(), 'admin');
  await shot('08-users-saved');

  const users = new Map((await apiUsers()).map((u) => [u.email, u]));
  assert.equal(users.get(PROMOTED).role, 'admin');
  for (const email of SWITCHED_ON) assert.equal(users.get(email)?.sync_enabled, true, email);
});

step('Sync now: users show statuses and message counts', async () => {
  await page.locator('#sync-now').click();
  await noticeMatches(/Sync requested \([0-9a-f]{8}\)/);
  const settled = async () => {
    for (const email of [SYNCED, PURGED]) {
      if ((await userStatus(email)) !== 'ok' || !((await captured(email)) > 0)) return false;
    }
    for (const email of Object.keys(IN_ERROR)) if ((await userStatus(email)) !== 'error') return false;
    return true;
  };
  // The console refreshes by itself after "Sync now"; Refresh now and then in case it stopped.
  await until(async () => {
    if (await settled()) return true;
    await page.locator('#refresh-users').click();
    await page.waitForTimeout(1000);
    return settled();
  }, 'synced users show ok with counts, the problem mailboxes show error', SYNC_TIMEOUT_MS);
  await shot('09-users-synced');

  const users = new Map((await apiUsers()).map((u) => [u.email, u]));
  assert.equal(await captured(SYNCED), users.get(SYNCED).messages.captured);
  assert.match(await row(PURGED).locator('td').nth(4).innerText(), /diego\.siciliani@contoso\.com/, 'the directory user the mail address reached');
});

step('Users in error: each with its status and what to do', async () => {
  await page.locator('#status-filter').selectOption('error');
  await until(async () => (await page.locator('#users tbody tr').count()) > 0 &&
    (await page.locator('#users tbody .status-ok').count()) === 0, 'only users in error listed');
  const shown = await page.locator('#users tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.email));
  for (const [email, remediation] of Object.entries(IN_ERROR)) {
    assert.ok(shown.includes(email), `${email} is listed in error`);
    assert.equal(await userStatus(email), 'error');
    assert.match(await row(email).locator('.remediation').innerText(), remediation, email);
  }
  await shot('10-users-in-error');
  const inError = (await apiUsers('&status=error')).map((u) => u.email).sort();
  assert.deepEqual([...shown].sort(), inError, 'the console lists exactly the API\'s users in error');
  await page.locator('#status-filter').selectOption('');
  await row(ADMIN).waitFor();
});

step('Sync runs: one row per mailbox run, failures with what to do', async () => {
  await tab('Sync runs');
  const runRow = (email) => page.locator(`#runs tbody tr[data-mailbox="${email}"]`);
  await runRow(SYNCED).first().waitFor();
  assert.ok(await runRow(SYNCED).locator('td.outcome', { hasText: /^synced$/ }).count() > 0);
  const patti = runRow('patti.fernandez@contoso.com').first();
  assert.equal(await patti.locator('td.outcome').innerText(), 'user_error');
  assert.match(await patti.locator('.remediation').innerText(), IN_ERROR['patti.fernandez@contoso.com']);
  await shot('11-sync-runs');
  const runs = (await api('/sync/runs?limit=50')).items;
  assert.equal(await page.locator('#runs tbody tr').count(), runs.length);
  assert.ok(runs.some((r) => r.mailbox === SYNCED && r.outcome === 'synced'));
});

step('Captured mail: the list, and one message rendered inert', async () => {
  await tab('User Management');
  await row(SYNCED).getByRole('button', { name: 'Mail' }).click();
  await viewLoaded();
  assert.equal(await text('#mail-owner'), SYNCED);
  await page.locator('#messages tbody tr').first().waitFor();
  const listed = (await api(`/users/${encodeURIComponent(SYNCED)}/messages?limit=25`)).items;
  const subjects = await page.locator('#messages tbody td.subject').allInnerTexts();
  assert.deepEqual(subjects, listed.map((m) => m.subject || '(no subject)'), 'newest first, as the API lists');
  assert.equal(subjects[0], hostileSubject, 'the newest message is the one delivered just now');
  await shot('12-mail-list');

  await page.locator('#messages td.subject button', { hasText: hostileSubject }).click();
  await viewLoaded();
  await until(async () => (await text('#message-subject')) === hostileSubject, 'the message opens');
  const body = page.frameLocator('#message-body');
  assert.equal(await body.locator('#visible').innerText(), 'The numbers are below.');
  await page.waitForTimeout(1000); // give a script or a remote load every chance to happen
  assert.deepEqual(trap.hits, [], 'nothing in the message ran or loaded');
  // And why: a sandbox without scripts or our origin, a policy that loads nothing.
  const frame = page.locator('#message-body');
  assert.equal(await frame.getAttribute('sandbox'), '', 'sandboxed: no allow-scripts, no allow-same-origin');
  const srcdoc = await frame.evaluate((f) => f.srcdoc);
  assert.ok(srcdoc.startsWith(BODY_POLICY), 'the body comes after a policy that loads nothing remote');
  await shot('13-mail-message');
  // The archive keeps the sender's markup as it was: the console is what keeps it inert.
  const stored = await api(`/users/${encodeURIComponent(SYNCED)}/messages/${encodeURIComponent(listed[0].id)}`);
  assert.match(stored.body.content, /<script>/);
});

step('Purge: refused while the sync is on, done once it is off', async () => {
  await tab('User Management');
  await row(PURGED).waitFor();
  await row(PURGED).getByRole('button', { name: 'Purge' }).click();
  await row(PURGED).getByRole('button', { name: 'Confirm purge' }).click();
  await page.locator('#problem').waitFor();
  assert.match(await text('#problem-title'), /Not possible right now/);
  assert.match(await text('#problem-detail'), /switch sync off for this user first/);

  await row(PURGED).locator('input[type="checkbox"]').uncheck();
  await page.locator('#save-users').click();
  await noticeMatches(/Saved changes to 1 user/);
  assert.equal(await page.locator('#problem').isVisible(), false, 'the earlier problem is cleared');
  await row(PURGED).getByRole('button', { name: 'Purge' }).click();
  await row(PURGED).getByRole('button', { name: 'Confirm purge' }).click();
  const done = await noticeMatches(new RegExp(`Purged ${PURGED}: \\d+ archived item`));
  assert.ok(Number(done.match(/: (\d+) archived/)[1]) > 0, done);
  await shot('14-purged');

  assert.deepEqual((await api(`/users/${encodeURIComponent(PURGED)}/messages`)).items, []);
  assert.equal((await apiUsers()).find((u) => u.email === PURGED).sync_enabled, false);
  assert.deepEqual(pageErrors, [], 'no script errors on the console');
});
