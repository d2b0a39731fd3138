// views/compare.js: runs side by side: pick run ids or a whole experiment
// (optionally some of its methods); one metric's per-domain table with
// the average over domains, per group of runs that differ only by seed
// (mean ± sample std) and per run, the best of each column marked; and
// one metric's curves of every run overlaid.
import { get, pool, series } from '../api.js';
import { Curves } from '../chart.js';
import { best, groups, lowerIsBetter, perRun, routerMetric } from '../stats.js';
import { card, fmtNum, h } from '../ui.js';

function s_ids(text) {
	return [...new Set((text || '').split(/[\s,]+/).filter((x) => /^\d+$/.test(x)).map(Number))];
}

async function s_runs(p) {
	let ids = s_ids(p.get('runs'));
	if (p.get('exp')) {
		const e = await get(`/experiments/${Number(p.get('exp'))}`);
		const methods = (p.get('methods') || '').split(',').filter(Boolean);
		ids = e.runs.filter((r) => !methods.length || methods.includes(r.method)).map((r) => r.id);
	}
	return pool(ids, 8, (id) => get(`/runs/${id}`));
}

// A table whose cells are {text, value}; the best value of each numeric
// column (by `lower`) is marked.
function s_table(testid, head, rows, lower) {
	const ncol = head.length;
	const bestOf = [];
	for (let c = 0; c < ncol; c++) {
		const vals = rows.map((r) => (r[c] && typeof r[c] === 'object' && !(r[c] instanceof Node) ? r[c].value : null));
		bestOf[c] = vals.some((v) => v !== null) ? best(vals, lower) : -1;
	}
	return h('table', { class: 't', 'data-testid': testid },
		h('thead', null, h('tr', null, head.map((x, c) => h('th', { class: rows.some((r) => r[c] && typeof r[c] === 'object' && !(r[c] instanceof Node)) ? 'num' : '' }, x)))),
		h('tbody', null, rows.map((r, i) => h('tr', null, r.map((cell, c) => {
			const isObj = typeof cell === 'object' && cell !== null && !(cell instanceof Node);
			return h('td', { class: (isObj ? 'num' : '') + (bestOf[c] === i ? ' best' : ''), dataset: isObj && cell.value !== null ? { value: cell.value } : null },
				isObj ? cell.text : cell);
		})))));
}

const pm = (c) => c.mean === null ? { text: '–', value: null } :
	{ text: c.n > 1 ? `${fmtNum(c.mean)} ± ${fmtNum(c.std)}` : fmtNum(c.mean), value: c.mean };

function s_form(ctx, metrics, metric, curve) {
	const p = ctx.params;
	const f = h('form', { class: 'filters', onsubmit: (ev) => {
		ev.preventDefault();
		const v = (n) => f.elements[n].value.trim();
		ctx.go('/compare', { runs: v('exp') ? '' : s_ids(v('runs')).join(','), exp: v('exp'), methods: v('methods'), metric: v('metric'), curve: v('curve') });
	} },
	h('label', null, 'runs', h('input', { name: 'runs', value: p.get('runs') || '', placeholder: '12, 13, 14', size: 24 })),
	h('label', null, 'or experiment', h('input', { name: 'exp', value: p.get('exp') || '', size: 5 })),
	h('label', null, 'methods', h('input', { name: 'methods', value: p.get('methods') || '', placeholder: 'all', size: 22 })),
	h('label', null, 'metric', h('select', { name: 'metric' }, metrics.map((m) => h('option', { value: m, selected: m === metric }, m)))),
	h('label', null, 'curve', h('input', { name: 'curve', value: curve, size: 8 })),
	h('button', { type: 'submit', class: 'primary' }, 'Compare'));
	return f;
}

export async function render(root, ctx) {
	const p = ctx.params;
	const t0 = performance.now();
	const runs = await s_runs(p);
	const metrics = [...new Set(runs.flatMap((r) => r.evaluations.map((e) => e.metric)).filter((m) => !routerMetric(m)))].sort();
	const metric = p.get('metric') || (metrics.includes('accuracy') ? 'accuracy' : metrics[0] || '');
	const curve = p.get('curve') || 'loss';
	root.append(h('h1', null, 'Compare', p.get('exp') ? h('span', { class: 'muted' }, ` experiment ${p.get('exp')}${p.get('methods') ? ' · ' + p.get('methods') : ''}`) : null));
	root.append(card(null, s_form(ctx, metrics, metric, curve)));
	if (!runs.length) {
		root.append(card(null, h('p', { class: 'muted' }, 'pick runs by id, or an experiment (all its runs, or some methods: modula-flan,modula-res)')));
		return;
	}
	const lower = lowerIsBetter(metric);
	const t = perRun(runs, metric);
	const gs = groups(t);
	const dir = lower ? 'lower is better' : 'higher is better';
	root.append(card(`${metric} by domain: mean ± std over seeds (${dir}, ★ best)`, s_table('groups',
		['group', 'seeds', ...t.domains, 'average'],
		gs.map((g) => [g.key, { text: String(g.n), value: null }, ...t.domains.map((d) => pm(g.cells[d])), pm(g.avg)]), lower)));
	root.append(card(`${metric} by domain, per run`, s_table('per-run',
		['run', 'method', 'seed', ...t.domains, 'average'],
		t.rows.map((r) => [h('a', { href: `#/runs/${r.run.id}` }, r.run.id), r.run.method, { text: String(r.run.seed), value: null },
			...t.domains.map((d) => (r.values[d] === undefined ? { text: '–', value: null } : { text: fmtNum(r.values[d]), value: r.values[d] })),
			r.avg === null ? { text: '–', value: null } : { text: fmtNum(r.avg), value: r.avg }]), lower)));
	root.dataset.tableMs = (performance.now() - t0).toFixed(1);
	const chartBox = h('div', { class: 'chart', 'data-testid': 'overlay', dataset: { key: curve } });
	root.append(card(`${curve} of each run`, chartBox));
	const curves = new Curves(chartBox, { title: curve, ylabel: curve, height: 320 });
	const pts = await pool(runs, 8, (r) => series('runs', r.id, curve, -1));
	if (!ctx.alive())
		return () => curves.destroy();
	runs.forEach((r, i) => {
		if (pts[i].length)
			curves.append(`${r.id} ${r.method} s${r.seed}`, pts[i]);
	});
	if (curves.series.size)
		curves.draw();
	else
		chartBox.append(h('p', { class: 'muted' }, `no '${curve}' points in these runs`));
	root.dataset.curvesMs = (performance.now() - t0).toFixed(1);
	return () => curves.destroy();
}
