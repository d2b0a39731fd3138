// evals.js: a run's or job's evaluations drawn: the per-domain table
// (domains × metrics, with the average over domains) and one router
// heatmap per layer (domain × expert, mean routing weight) from the
// `router.LAYER.EXPERT` metrics.
import { mean, routerMetric } from './stats.js';
import { fmtNum, h, table } from './ui.js';

export function evalTable(evals) {
	const plain = evals.filter((e) => !routerMetric(e.metric));
	if (!plain.length)
		return null;
	const domains = [...new Set(plain.map((e) => e.domain))].sort();
	const metrics = [...new Set(plain.map((e) => e.metric))].sort();
	const v = {};
	for (const e of plain)
		v[`${e.domain}\u0000${e.metric}`] = e.value;
	const rows = domains.map((d) => ({ domain: d, ...Object.fromEntries(metrics.map((m) => [m, v[`${d}\u0000${m}`]])) }));
	const avg = { domain: 'average', avg: true };
	for (const m of metrics) {
		const vs = rows.map((r) => r[m]).filter((x) => x !== undefined && x !== null);
		avg[m] = vs.length ? mean(vs) : null;
	}
	rows.push(avg);
	return table([{ key: 'domain', label: 'domain', render: (r) => r.avg ? h('b', null, 'average') : r.domain },
		...metrics.map((m) => ({ key: m, label: m, num: true }))], rows, { attrs: { 'data-testid': 'evaluations' } });
}

// Blue with opacity by value in [lo, hi].
function s_shade(v, lo, hi) {
	const t = hi > lo ? (v - lo) / (hi - lo) : 1;
	return `rgba(36, 86, 200, ${(0.08 + 0.8 * t).toFixed(3)})`;
}

export function heatmaps(evals) {
	const layers = new Map();  // layer -> [{domain, expert, value}]
	for (const e of evals) {
		const r = routerMetric(e.metric);
		if (!r || e.value === null)
			continue;
		if (!layers.has(r.layer))
			layers.set(r.layer, []);
		layers.get(r.layer).push({ domain: e.domain, expert: r.expert, value: e.value });
	}
	if (!layers.size)
		return null;
	const names = [...layers.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
	return h('div', { class: 'grid' }, names.map((layer) => {
		const cells = layers.get(layer);
		const domains = [...new Set(cells.map((c) => c.domain))].sort();
		const experts = [...new Set(cells.map((c) => c.expert))].sort();
		const v = new Map(cells.map((c) => [`${c.domain}\u0000${c.expert}`, c.value]));
		const lo = Math.min(...cells.map((c) => c.value)), hi = Math.max(...cells.map((c) => c.value));
		return h('div', { class: 'heat', 'data-layer': layer },
			h('h2', null, `layer ${layer}`),
			h('table', { class: 't' },
				h('thead', null, h('tr', null, h('th', null, 'domain \\ expert'), experts.map((x) => h('th', { class: 'num' }, x)))),
				h('tbody', null, domains.map((d) => h('tr', null, h('th', null, d), experts.map((x) => {
					const val = v.get(`${d}\u0000${x}`);
					return val === undefined ? h('td', { class: 'cell' }, '–') :
						h('td', { class: 'cell', style: `background:${s_shade(val, lo, hi)}`, dataset: { value: val } }, fmtNum(val));
				}))))));
	}));
}
