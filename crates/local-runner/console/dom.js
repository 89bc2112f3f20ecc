// Small DOM helpers and the view switch. Everything from the API reaches the page as text
// nodes (never innerHTML), so a display name or a subject cannot inject markup.

import { ApiProblem } from './api.js';

export const $ = (selector) => document.querySelector(selector);

/** `el('td', { class: 'number' }, 12)`: attributes, `on…` handlers, then children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : '—';
}

export function notice(text) {
  $('#notice').textContent = text;
}

export function clearProblem() {
  $('#problem').hidden = true;
}

/** Shows a problem+json answer: title, status, detail and the fields at fault. */
export function showProblem(error) {
  const problem = error instanceof ApiProblem ? error.problem : { title: 'Something went wrong', detail: String(error) };
  $('#problem-title').textContent = problem.title ?? 'Request failed';
  $('#problem-status').textContent = error instanceof ApiProblem ? `(HTTP ${error.status})` : '';
  $('#problem-detail').textContent = problem.detail ?? '';
  $('#problem-errors').replaceChildren(
    ...(problem.errors ?? []).map((e) => el('li', {}, `${e.field}: ${e.message}`)),
  );
  $('#problem').hidden = false;
  notice('');
}

/** A failure as the API reports it on a user, a run or the connection, with what to do. */
export function failure(f) {
  if (!f) return null;
  return el(
    'div',
    { class: 'failure' },
    el('p', { class: 'failure-code' }, f.code, f.microsoft_code ? ` (${f.microsoft_code})` : ''),
    el('p', { class: 'failure-message' }, f.message),
    el('p', { class: 'remediation' }, f.remediation),
  );
}

/** A destructive button: the first click arms it, the second does it. */
export function twoStep(label, armedLabel, action) {
  const button = el('button', { type: 'button', class: 'danger' }, label);
  button.addEventListener('click', async () => {
    if (!button.classList.contains('armed')) {
      button.classList.add('armed');
      button.textContent = armedLabel;
      return;
    }
    button.disabled = true;
    await run(action);
    button.disabled = false;
  });
  return button;
}

/** Runs a user action, showing its problem if it fails. */
export async function run(action) {
  clearProblem();
  try {
    await action();
  } catch (e) {
    showProblem(e);
  }
}

const loaders = new Map();
let current = null;
let loads = 0;

export function registerView(name, loader) {
  loaders.set(name, loader);
}

export function currentView() {
  return current;
}

/** Shows one view and loads what it shows; the view is `aria-busy` until it has. */
export async function go(name, ...args) {
  current = name;
  const load = ++loads;
  notice('');
  // How connecting ended is part of My Connection, not of the other views.
  const landing = $('#landing');
  if (landing) landing.hidden = name !== 'connection';
  for (const section of document.querySelectorAll('section[data-view]')) {
    section.hidden = section.dataset.view !== name;
    if (!section.hidden) section.setAttribute('aria-busy', 'true');
  }
  for (const tab of document.querySelectorAll('#tabs button')) {
    if (tab.dataset.view === name) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
  await run(() => loaders.get(name)(...args));
  // A later switch owns the flag now.
  if (load === loads) $(`section[data-view="${name}"]`).removeAttribute('aria-busy');
}
