// views/job.js: one job: state and timings, operator actions, its
// dependencies and dependents, spec and result, outputs, live curves and
// evaluations.
import { artifactUrl, get } from '../api.js';
import { jobActions } from '../actions.js';
import { evalTable, heatmaps } from '../evals.js';
import { liveCurves } from '../metrics.js';
import { badge, card, fmtTime, h } from '../ui.js';

const link = (id) => h('a', { href: `#/jobs/${id}`, style: 'margin-right:8px' }, id);

export async function render(root, ctx) {
	const [j, evals] = await Promise.all([get(`/jobs/${ctx.id}`), get('/evaluations', { job: ctx.id, limit: 1000 })]);
	const reload = () => ctx.alive() && window.dispatchEvent(new HashChangeEvent('hashchange'));
	const kv = [
		['state', badge(j.state)], ['kind', j.kind], ['run', j.run ? h('a', { href: `#/runs/${j.run}` }, j.run) : '–'],
		['backend', j.backend + (j.min_gpu_mem_mb ? ` (≥ ${j.min_gpu_mem_mb} MB)` : '')], ['priority', j.priority],
		['attempts', `${j.attempts} of ${j.max_attempts}`], ['worker', j.lease_owner || j.worker || '–'],
		['created', fmtTime(j.created_ms)], ['started', fmtTime(j.started_ms)], ['finished', fmtTime(j.finished_ms)],
		['needs', j.deps.length ? j.deps.map((d) => h('span', null, link(d.id), badge(d.state), ' ')) : '–'],
		['needed by', j.dependents.length ? j.dependents.map((d) => link(d.id)) : '–'],
		['cached from', j.cached_from ? link(j.cached_from) : '–'],
		['error', j.error || '–'],
	];
	root.append(h('h1', null, `Job ${j.id} `, h('span', { class: 'muted' }, j.kind)));
	root.append(card(null, h('div', { class: 'row' }, h('dl', { class: 'kv' }, kv.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])),
		h('div', { class: 'spacer' }), jobActions(j, reload))));
	const outs = [...j.outputs];
	if (j.checkpoint)
		outs.push({ name: 'checkpoint (newest)', sha256: j.checkpoint });
	if (outs.length)
		root.append(card('Outputs', h('ul', null, outs.map((o) => h('li', null, h('a', { href: artifactUrl(o.sha256), download: `${j.id}-${o.name}` }, o.name), ' ', h('span', { class: 'mono muted' }, o.sha256))))));
	const curvesBox = h('div', { class: 'grid', 'data-testid': 'curves' });
	root.append(card('Curves', curvesBox));
	const ev = evalTable(evals.items), hm = heatmaps(evals.items);
	if (ev)
		root.append(card('Evaluation', ev));
	if (hm)
		root.append(card('Router heatmaps (mean routing weight)', hm));
	root.append(h('div', { class: 'grid' }, card('Spec', h('pre', null, JSON.stringify(j.spec, null, 2))),
		card('Result', h('pre', null, JSON.stringify(j.result, null, 2)))));
	const live = liveCurves(curvesBox, [{ id: j.id, label: `${j.id} ${j.kind}` }]);
	await live.ready;
	if (!live.charts.size)
		curvesBox.append(h('p', { class: 'muted', 'data-empty': '' }, 'no metrics'));
	return () => live.stop();
}
