// views/lists.js: the list pages (experiments, runs, jobs) and one
// experiment's page (its runs and the ways to compare them). A column of a
// list page with `sort: true` is one the API sorts by (docs/api.md).
import { get } from '../api.js';
import { pagedList } from '../list.js';
import { badge, card, fmtAgo, fmtTime, h, shortJson, sortRows, table } from '../ui.js';

const idLink = (base) => ({ key: 'id', label: 'id', num: true, sort: true, render: (r) => h('a', { href: `#/${base}/${r.id}` }, r.id) });

export async function renderExperiments(root, ctx) {
	root.append(h('h1', null, 'Experiments'));
	root.append(card(null, await pagedList(ctx, {
		route: '/experiments', api: '/experiments', testid: 'experiments',
		filters: [{ param: 'name', label: 'name', size: 16 }],
		cols: [idLink('experiments'),
			{ key: 'name', label: 'name', sort: true, render: (r) => h('a', { href: `#/experiments/${r.id}` }, r.name) },
			{ key: 'created_ms', label: 'created', sort: true, render: (r) => fmtTime(r.created_ms) },
			{ key: 'links', label: '', render: (r) => h('span', { class: 'row' },
				h('a', { href: `#/runs?experiment=${r.id}` }, 'runs'),
				h('a', { href: `#/compare?exp=${r.id}` }, 'compare')) }],
	})));
}

// The methods of a run list with their run counts: {method: n}.
function s_methods(runs) {
	const out = {};
	for (const r of runs)
		out[r.method] = (out[r.method] || 0) + 1;
	return out;
}

export async function renderExperiment(root, ctx) {
	const e = await get(`/experiments/${ctx.id}`);
	const methods = s_methods(e.runs);
	const flanRes = methods['modula-flan'] && methods['modula-res'];
	root.append(h('h1', null, `Experiment ${e.id} `, h('span', { class: 'muted' }, e.name)));
	root.append(card('Compare', h('div', { class: 'row' },
		h('a', { href: `#/compare?exp=${e.id}` }, h('button', { class: 'primary' }, `All ${e.runs.length} runs`)),
		h('a', { href: `#/compare?exp=${e.id}&methods=modula-flan,modula-res`, 'data-testid': 'flan-vs-res' },
			h('button', { disabled: !flanRes, title: flanRes ? '' : 'this experiment has no modula-flan and modula-res runs' },
				'MoDULA-Flan vs MoDULA-Res')),
		Object.entries(methods).map(([m, n]) => h('a', { href: `#/compare?exp=${e.id}&methods=${encodeURIComponent(m)}` }, `${m} (${n})`)))));
	const sort = ctx.params.get('sort') || 'id';
	const asc = ctx.params.get('order') !== 'desc';
	const cols = [idLink('runs'), { key: 'method', label: 'method', sort: true }, { key: 'seed', label: 'seed', num: true, sort: true },
		{ key: 'params', label: 'params', sort: (r) => JSON.stringify(r.params), cls: () => 'wrap mono', render: (r) => shortJson(r.params, 200) }];
	const rows = sortRows([...e.runs], cols.find((c) => c.key === sort) || cols[0], asc);
	root.append(card(`Runs (${e.runs.length})`, table(cols, rows, { sort: { key: sort, asc }, attrs: { 'data-testid': 'runs' },
		onSort: (k) => ctx.go(`/experiments/${e.id}`, { sort: k, order: sort === k && asc ? 'desc' : 'asc' }) })));
	root.append(card('Spec', h('pre', null, JSON.stringify(e.spec, null, 2))));
}

export async function renderRuns(root, ctx) {
	const exp = ctx.params.get('experiment');
	root.append(h('h1', null, 'Runs', exp ? h('span', { class: 'muted' }, ` of experiment ${exp}`) : null));
	const el = await pagedList(ctx, {
		route: '/runs', api: '/runs', testid: 'runs',
		filters: [{ param: 'experiment', label: 'experiment', size: 6 }, { param: 'method', label: 'method', size: 14 },
			{ param: 'seed', label: 'seed', size: 4 }],
		cols: [idLink('runs'),
			{ key: 'experiment', label: 'experiment', num: true, sort: true, render: (r) => r.experiment ? h('a', { href: `#/experiments/${r.experiment}` }, r.experiment) : '' },
			{ key: 'method', label: 'method', sort: true },
			{ key: 'seed', label: 'seed', num: true, sort: true },
			{ key: 'params', label: 'params', cls: () => 'wrap mono', render: (r) => shortJson(r.params) },
			{ key: 'created_ms', label: 'created', sort: true, render: (r) => fmtTime(r.created_ms) }],
	});
	const ids = [...el.querySelectorAll('tbody tr td:first-child')].map((td) => td.textContent);
	root.append(card(null, el, ids.length ? h('div', { class: 'row', style: 'margin-top:8px' },
		h('a', { href: `#/compare?runs=${ids.join(',')}` }, `Compare these ${ids.length} runs`)) : null));
}

export async function renderJobs(root, ctx) {
	root.append(h('h1', null, 'Jobs'));
	root.append(card(null, await pagedList(ctx, {
		route: '/jobs', api: '/jobs', testid: 'jobs',
		filters: [{ param: 'state', label: 'state', size: 9 }, { param: 'kind', label: 'kind', size: 8 },
			{ param: 'run', label: 'run', size: 6 }, { param: 'worker', label: 'worker', size: 12 }],
		cols: [idLink('jobs'),
			{ key: 'kind', label: 'kind', sort: true },
			{ key: 'state', label: 'state', sort: true, render: (r) => badge(r.state) },
			{ key: 'run', label: 'run', num: true, sort: true, render: (r) => r.run ? h('a', { href: `#/runs/${r.run}` }, r.run) : '' },
			{ key: 'priority', label: 'prio', num: true, sort: true },
			{ key: 'attempts', label: 'tries', num: true, render: (r) => `${r.attempts}/${r.max_attempts}` },
			{ key: 'worker', label: 'worker', render: (r) => r.lease_owner || r.worker || '' },
			{ key: 'created_ms', label: 'created', sort: true, render: (r) => fmtAgo(r.created_ms) },
			{ key: 'error', label: 'error', cls: () => 'wrap', render: (r) => shortJson(r.error || '', 80) }],
	})));
}
