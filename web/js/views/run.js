// views/run.js: one run: its job DAG with states (refreshed every 5 s),
// live loss and learning-rate curves of its jobs, per-domain evaluation,
// router heatmaps, and the artifacts its jobs made.
import { artifactUrl, get, pool } from '../api.js';
import { jobActions } from '../actions.js';
import { dag } from '../dag.js';
import { evalTable, heatmaps } from '../evals.js';
import { liveCurves } from '../metrics.js';
import { badge, card, fmtAgo, fmtTime, h, shortJson, table } from '../ui.js';

const REFRESH_MS = 5000;

async function s_jobs(run) {
	return pool(run.jobs, 8, (j) => get(`/jobs/${j.id}`));
}

function s_artifacts(jobs) {
	const rows = [];
	for (const j of jobs) {
		for (const o of j.outputs || [])
			rows.push({ job: j, name: o.name, sha256: o.sha256 });
		if (j.checkpoint)
			rows.push({ job: j, name: 'checkpoint (newest)', sha256: j.checkpoint });
	}
	if (!rows.length)
		return h('p', { class: 'muted' }, 'no artifacts yet');
	return table([
		{ key: 'job', label: 'job', render: (r) => h('a', { href: `#/jobs/${r.job.id}` }, `${r.job.id} ${r.job.kind}`) },
		{ key: 'name', label: 'name' },
		{ key: 'sha256', label: 'sha256', cls: () => 'mono', render: (r) => r.sha256.slice(0, 16) + '…' },
		{ key: 'dl', label: '', render: (r) => h('a', { href: artifactUrl(r.sha256), download: `${r.job.id}-${r.name.replace(/[^\w.-]+/g, '_')}` }, 'download') },
	], rows, { attrs: { 'data-testid': 'artifacts' } });
}

function s_jobsTable(jobs, refresh) {
	return table([
		{ key: 'id', label: 'job', num: true, render: (j) => h('a', { href: `#/jobs/${j.id}` }, j.id) },
		{ key: 'kind', label: 'kind' },
		{ key: 'state', label: 'state', render: (j) => badge(j.state) },
		{ key: 'attempts', label: 'tries', num: true, render: (j) => `${j.attempts}/${j.max_attempts}` },
		{ key: 'worker', label: 'worker', render: (j) => j.lease_owner || j.worker || '' },
		{ key: 'finished_ms', label: 'finished', render: (j) => j.finished_ms ? fmtAgo(j.finished_ms) : '' },
		{ key: 'error', label: 'error', cls: () => 'wrap', render: (j) => shortJson(j.error || '', 80) },
		{ key: 'actions', label: '', render: (j) => jobActions(j, refresh) },
	], jobs, { attrs: { 'data-testid': 'jobs' }, rowAttrs: (j) => ({ 'data-job': j.id }) });
}

export async function render(root, ctx) {
	const run = await get(`/runs/${ctx.id}`);
	let jobs = await s_jobs(run);
	const dagBox = h('div'), jobsBox = h('div');
	const draw = () => {
		dagBox.replaceChildren(jobs.length ? dag(jobs) : h('p', { class: 'muted' }, 'no jobs in this run yet'));
		jobsBox.replaceChildren(s_jobsTable(jobs, refresh));
	};
	async function refresh() {
		const r = await get(`/runs/${ctx.id}`);
		jobs = await s_jobs(r);
		if (ctx.alive())
			draw();
	}
	draw();
	root.append(h('h1', null, `Run ${run.id} `, h('span', { class: 'muted' }, `${run.method} · seed ${run.seed}`)));
	root.append(card(null, h('dl', { class: 'kv' },
		h('dt', null, 'experiment'), h('dd', null, run.experiment ? h('a', { href: `#/experiments/${run.experiment}` }, run.experiment) : '–'),
		h('dt', null, 'method'), h('dd', null, run.method),
		h('dt', null, 'seed'), h('dd', null, run.seed),
		h('dt', null, 'params'), h('dd', { class: 'mono' }, JSON.stringify(run.params)),
		h('dt', null, 'created'), h('dd', null, fmtTime(run.created_ms)),
		h('dt', null, 'compare'), h('dd', null, h('a', { href: `#/compare?runs=${run.id}` }, 'with other runs →')))));
	root.append(card('Jobs', dagBox, jobsBox));
	const curvesBox = h('div', { class: 'grid', 'data-testid': 'curves' });
	root.append(card('Curves', curvesBox));
	const ev = evalTable(run.evaluations);
	root.append(card('Evaluation', ev || h('p', { class: 'muted' }, 'no evaluation yet')));
	const hm = heatmaps(run.evaluations);
	if (hm)
		root.append(card('Router heatmaps (mean routing weight)', hm));
	root.append(card('Artifacts', s_artifacts(jobs)));
	const live = liveCurves(curvesBox, jobs.map((j) => ({ id: j.id, label: `${j.id} ${j.kind}` })));
	await live.ready;
	if (!live.charts.size)
		curvesBox.append(h('p', { class: 'muted', 'data-empty': '' }, 'no metrics yet (they appear here while the run trains)'));
	const timer = setInterval(() => {
		if (ctx.alive() && !document.hidden)
			refresh().catch(() => {});
	}, REFRESH_MS);
	return () => {
		clearInterval(timer);
		live.stop();
	};
}
