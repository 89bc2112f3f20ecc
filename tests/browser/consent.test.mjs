// Connecting in a real browser: activate the service account through the API, then in headless
// Debian chromium sign in with Microsoft (the simulator's account picker), follow our
// /consent/callback on to the admin-consent page of the tenant the sign-in proved, decide there,
// follow the redirects back to the front end's page, and check the final URL and the state the
// API stores (the Microsoft account that granted consent included). Run by scripts/browser-test, which starts the embedded default and sets
// BROWSER_TEST_BASE_URL; run alone with `node --test tests/browser/` against a running runner.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { launchChromium } from './chromium.mjs';

const BASE = (process.env.BROWSER_TEST_BASE_URL ?? '').replace(/\/$/, '');
const ORG = 'demo';
const ADMIN = 'admin@contoso.com';
const STEP_TIMEOUT_MS = 10_000;

let token;

async function api(method, path, body) {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path} -> ${res.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Turn the service account on (if it is not yet) and activate: returns the sign-in URL. */
async function activate() {
  const current = await api('GET', '/v1/integration');
  if (!current.settings.use_service_account) {
    await api('PATCH', '/v1/integration/settings', {
      use_service_account: true,
      version: current.settings.version,
    });
  }
  const { consent_url } = await api('POST', '/v1/integration/connection/activate');
  assert.match(consent_url, /\/organizations\/oauth2\/v2\.0\/authorize\?/, 'activate starts with the sign-in');
  assert.match(consent_url, /code_challenge_method=S256/, 'with PKCE');
  const pending = await api('GET', '/v1/integration');
  assert.equal(pending.connection.status, 'pending_sign_in');
  return consent_url;
}

/**
 * Open the sign-in URL in a fresh headless chromium (new, empty user-data-dir: no simulator
 * session cookie), pick the admin's account, land on the consent page of the admin's tenant,
 * press `decision` ('accept' or 'cancel') and wait until the redirects end on the front end's
 * page. Returns the final URL and the outcome shown.
 */
async function clickThrough(consentUrl, decision) {
  const { context, close } = await launchChromium();
  try {
    context.setDefaultTimeout(STEP_TIMEOUT_MS);
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(consentUrl);

    // Microsoft's (the simulator's) account picker: one form per user.
    await page.locator('#accounts').waitFor();
    const account = page.locator(
      `form[data-action="signin"]:has(input[name="login_hint"][value="${ADMIN}"]) button`,
    );
    assert.equal(await account.count(), 1, `one sign-in button for ${ADMIN}`);
    await account.click();

    // Our callback verified the sign-in and sent the browser to the consent page of exactly
    // that tenant, signed in as the admin.
    await page.locator('#permissions').waitFor();
    assert.match(page.url(), /\/[0-9a-f-]{36}\/v2\.0\/adminconsent\?/, 'tenant-specific consent URL');
    assert.ok((await page.locator('main').innerText()).includes(ADMIN), 'signed in as the admin');
    const button = page.locator(`form[data-action="${decision}"] button[type="submit"]`);
    assert.equal(await button.count(), 1, `one ${decision} button`);
    await Promise.all([
      page.waitForURL((url) => url.pathname === '/settings/connection', { waitUntil: 'load' }),
      button.click(),
    ]);
    const outcome = (await page.locator('#outcome').innerText()).trim();
    return { url: page.url(), outcome };
  } finally {
    await close();
  }
}

before(async () => {
  assert.ok(BASE, 'BROWSER_TEST_BASE_URL is set (scripts/browser-test sets it)');
  const res = await fetch(
    `${BASE}/_local/token?org=${ORG}&email=${encodeURIComponent(ADMIN)}`,
    { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) },
  );
  assert.equal(res.status, 200, 'development token issuer answers');
  token = (await res.json()).access_token;
  assert.ok(token, 'got an access token');
});

// Declining first, then granting: a declined activation can be activated again, and the
// granted one is the state the org is left in.
test('admin cancels on the consent page: back on the front end with consent_declined', { timeout: 30_000 }, async () => {
  const consentUrl = await activate();
  const { url, outcome } = await clickThrough(consentUrl, 'cancel');
  assert.equal(url, `${BASE}/settings/connection?connection=consent_declined`);
  assert.equal(outcome, 'consent_declined');

  const { connection } = await api('GET', '/v1/integration');
  assert.equal(connection.status, 'error');
  assert.equal(connection.error?.code, 'consent_declined', JSON.stringify(connection));
});

test('admin accepts on the consent page: back on the front end, connected', { timeout: 30_000 }, async () => {
  const consentUrl = await activate();
  const { url, outcome } = await clickThrough(consentUrl, 'accept');
  assert.equal(url, `${BASE}/settings/connection?connection=connected`);
  assert.equal(outcome, 'connected');

  const { connection } = await api('GET', '/v1/integration');
  assert.equal(connection.status, 'connected', JSON.stringify(connection));
  assert.equal(connection.granted_by?.user_principal_name, ADMIN, JSON.stringify(connection));
  assert.ok(connection.granted_by?.object_id, 'the Microsoft account is recorded by object id');
  assert.ok(connection.tenant_id, `tenant_id is set: ${JSON.stringify(connection)}`);
  assert.equal(connection.error, null);
});
