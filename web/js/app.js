// app.js: the dashboard's entry point: the hash router (#/path?query, so
// every view has a URL that reopens it), the navigation bar and the token
// box. Views are modules exporting render(root, ctx) -> cleanup|undefined.
import { setToken, token } from './api.js';
import { h, message } from './ui.js';
import * as overview from './views/overview.js';
import * as lists from './views/lists.js';
import * as run from './views/run.js';
import * as job from './views/job.js';
import * as compare from './views/compare.js';
import * as registry from './views/registry.js';
import * as submit from './views/submit.js';

const routes = [
	[/^\/?$/, 'overview', overview.render],
	[/^\/experiments$/, 'experiments', lists.renderExperiments],
	[/^\/experiments\/(\d+)$/, 'experiments', lists.renderExperiment],
	[/^\/runs$/, 'runs', lists.renderRuns],
	[/^\/runs\/(\d+)$/, 'runs', run.render],
	[/^\/jobs$/, 'jobs', lists.renderJobs],
	[/^\/jobs\/(\d+)$/, 'jobs', job.render],
	[/^\/compare$/, 'compare', compare.render],
	[/^\/registry$/, 'registry', registry.render],
	[/^\/submit$/, 'submit', submit.render],
];

let cleanup = null;
let generation = 0;

// The current route: {path, params (URLSearchParams), id}.
function s_parse() {
	const raw = location.hash.replace(/^#/, '') || '/';
	const q = raw.indexOf('?');
	return { path: q < 0 ? raw : raw.slice(0, q), params: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)) };
}

// Go to `path` with `params` (an object; empty values dropped).
export function go(path, params) {
	const q = new URLSearchParams();
	for (const [k, v] of Object.entries(params || {}))
		if (v !== undefined && v !== null && v !== '')
			q.set(k, String(v));
	const s = q.toString();
	location.hash = '#' + path + (s ? '?' + s : '');
}

async function s_route() {
	const { path, params } = s_parse();
	const root = document.getElementById('view');
	const gen = ++generation;
	if (cleanup) {
		cleanup();
		cleanup = null;
	}
	for (const a of document.querySelectorAll('#nav a'))
		a.classList.remove('active');
	const hit = routes.find(([re]) => re.test(path));
	root.replaceChildren();
	if (!hit) {
		root.append(message('error', `no such page '${path}'`));
		return;
	}
	const [re, nav, render] = hit;
	document.querySelector(`#nav a[data-nav="${nav}"]`)?.classList.add('active');
	const m = path.match(re);
	const ctx = { id: m[1] ? Number(m[1]) : null, params, go, alive: () => gen === generation };
	root.dataset.view = nav;
	root.dataset.ready = '0';
	try {
		const c = await render(root, ctx);
		if (gen === generation)
			cleanup = c || null;
		else if (c)
			c();
	} catch (e) {
		if (gen === generation)
			root.append(message('error', e.message));
	}
	if (gen === generation)
		root.dataset.ready = '1';
}

function s_token_ui() {
	const state = document.getElementById('token-state');
	const input = document.getElementById('token-input');
	const clear = document.getElementById('token-clear');
	const on = !!token();
	state.textContent = on ? 'token set' : 'read-only';
	state.classList.toggle('on', on);
	clear.hidden = !on;
	input.value = '';
	document.body.classList.toggle('operator', on);
}

document.getElementById('token-form').addEventListener('submit', (ev) => {
	ev.preventDefault();
	const v = document.getElementById('token-input').value.trim();
	if (!v)
		return;
	setToken(v);
	s_token_ui();
	s_route();
});
document.getElementById('token-clear').addEventListener('click', () => {
	setToken('');
	s_token_ui();
	s_route();
});
window.addEventListener('hashchange', s_route);
s_token_ui();
s_route();
document.getElementById('status').append(h('span', null, 'modula dashboard · '),
	h('a', { href: '/api/v1/health' }, 'API health'), h('span', null, ' · '), h('a', { href: '/metrics' }, 'metrics'));
