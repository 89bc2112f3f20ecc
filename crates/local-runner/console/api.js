// The console's only door to the service: a development token from /_local/token (standing in
// for the platform's identity provider), then the public API under /v1 with that bearer token,
// exactly as the real front end calls it. Failures become ApiProblem (RFC 9457 problem+json).

const IDENTITY_KEY = 'o365-console-identity';

let identity = null; // { org, email, token }

export class ApiProblem extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Who signed in last in this tab: consent sends the tab away to Microsoft and back. */
export function storedIdentity() {
  try {
    return JSON.parse(sessionStorage.getItem(IDENTITY_KEY));
  } catch {
    return null;
  }
}

export function currentIdentity() {
  return identity;
}

export async function signIn(org, email) {
  const query = new URLSearchParams({ org, email });
  const res = await fetch(`/_local/token?${query}`);
  if (!res.ok) throw await problemOf(res);
  const { access_token: token } = await res.json();
  identity = { org, email, token };
  // Only who it was: a fresh token is issued on the next page load.
  sessionStorage.setItem(IDENTITY_KEY, JSON.stringify({ org, email }));
  return identity;
}

export function signOut() {
  identity = null;
  sessionStorage.removeItem(IDENTITY_KEY);
}

/**
 * Calls `/v1${path}`. `ifMatch` is the version the change is based on (sent as the quoted ETag,
 * so a stale one is refused with 412). Returns the parsed body (null for 204).
 */
export async function api(method, path, { body, ifMatch } = {}) {
  if (!identity) {
    throw new ApiProblem(401, { title: 'Not signed in', detail: 'Sign in with an org and an email first.' });
  }
  const headers = { authorization: `Bearer ${identity.token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (ifMatch !== undefined) headers['if-match'] = `"${ifMatch}"`;
  const res = await fetch(`/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw await problemOf(res);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export function pathOf(email) {
  return encodeURIComponent(email);
}

async function problemOf(res) {
  const text = await res.text();
  try {
    return new ApiProblem(res.status, JSON.parse(text));
  } catch {
    return new ApiProblem(res.status, { title: res.statusText || 'Request failed', detail: text.slice(0, 500) });
  }
}
