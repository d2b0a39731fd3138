// views/overview.js: the queue at a glance: jobs per state (from /metrics),
// the workers (alive, backend, current jobs, last heartbeat) and the newest
// events. Redrawn every 5 seconds while open.
import { get, jobStates } from '../api.js';
import { badge, card, fmtAgo, fmtTime, h, shortJson, table } from '../ui.js';

const STATES = ['pending', 'ready', 'leased', 'running', 'succeeded', 'failed', 'cancelled'];
const REFRESH_MS = 5000;

async function s_draw(body) {
	const [states, workers, running, leased, events] = await Promise.all([
		jobStates(), get('/workers'), get('/jobs', { state: 'running', limit: 1000 }),
		get('/jobs', { state: 'leased', limit: 1000 }), get('/events', { order: 'desc', limit: 15 })]);
	const current = {};
	for (const j of [...running.items, ...leased.items])
		(current[j.lease_owner] ||= []).push(j);
	const total = STATES.reduce((a, s) => a + (states[s] || 0), 0);
	const counts = h('div', { class: 'counts', 'data-testid': 'job-states' },
		h('a', { class: 'count', href: '#/jobs', dataset: { state: 'all' } }, h('b', null, total), h('span', null, 'all jobs')),
		STATES.map((s) => h('a', { class: 'count', href: `#/jobs?state=${s}`, dataset: { state: s } },
			h('b', null, states[s] || 0), h('span', null, s))));
	const wt = table([
		{ key: 'id', label: 'worker' },
		{ key: 'state', label: 'alive', render: (w) => badge(w.state) },
		{ key: 'backend', label: 'backend', render: (w) => w.backend + (w.gpu_mem_mb ? ` (${Math.round(w.gpu_mem_mb / 1024)} GiB)` : '') },
		{ key: 'host', label: 'host' },
		{ key: 'slots', label: 'slots', num: true },
		{ key: 'current', label: 'current job', render: (w) => (current[w.id] || []).length ?
			h('span', null, current[w.id].map((j) => h('a', { href: `#/jobs/${j.id}`, style: 'margin-right:6px' }, `${j.id} ${j.kind}`))) :
			h('span', { class: 'muted' }, 'idle') },
		{ key: 'last_seen', label: 'last heartbeat', render: (w) => h('span', { title: fmtTime(w.last_seen) }, fmtAgo(w.last_seen)) },
	], workers.items, { attrs: { 'data-testid': 'workers' } });
	const et = table([
		{ key: 't_ms', label: 'time', render: (e) => fmtTime(e.t_ms) },
		{ key: 'kind', label: 'event' },
		{ key: 'job', label: 'job', render: (e) => e.job ? h('a', { href: `#/jobs/${e.job}` }, e.job) : '' },
		{ key: 'actor', label: 'by' },
		{ key: 'detail', label: 'detail', cls: () => 'wrap mono', render: (e) => shortJson(e.detail, 140) },
	], events.items, { attrs: { 'data-testid': 'events' } });
	body.replaceChildren(
		card('Jobs by state', counts),
		card(`Workers (${workers.items.filter((w) => w.state === 'up').length} alive of ${workers.items.length})`,
			workers.items.length ? wt : h('p', { class: 'muted' }, 'no worker has connected yet')),
		card('Recent events', events.items.length ? et : h('p', { class: 'muted' }, 'no events yet'),
			h('p', null, h('a', { href: '#/jobs?order=desc' }, 'all jobs →'))));
}

export async function render(root, ctx) {
	const body = h('div');
	root.append(h('h1', null, 'Overview'), body);
	await s_draw(body);
	const timer = setInterval(() => {
		if (ctx.alive() && !document.hidden)
			s_draw(body).catch(() => {});
	}, REFRESH_MS);
	return () => clearInterval(timer);
}
