// stats.js: the arithmetic of the tables: mean and sample standard
// deviation, which direction is better for a metric, router metrics
// (`router.LAYER.EXPERT`) and the grouping of runs that differ only by seed.
// Pure functions, no DOM.

export function mean(xs) {
	return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

// Sample standard deviation (n - 1); 0 for fewer than two values.
export function std(xs) {
	if (xs.length < 2)
		return 0;
	const m = mean(xs);
	return Math.sqrt(xs.reduce((a, b) => a + (b - m) * (b - m), 0) / (xs.length - 1));
}

// Losses, perplexities and errors are better small; scores better large.
export function lowerIsBetter(metric) {
	return /loss|ppl|perplexity|error|err$|time|cost|flops|tokens/i.test(metric);
}

// A router metric names a layer and an expert: router.L3.math ->
// {layer: 'L3', expert: 'math'} (the layer may hold dots); else null.
export function routerMetric(metric) {
	const m = /^router\.(.+)\.([^.]+)$/.exec(metric);
	return m ? { layer: m[1], expert: m[2] } : null;
}

// The index of the best value of `values` (nulls skipped), or -1.
export function best(values, lower) {
	let k = -1;
	values.forEach((v, i) => {
		if (v === null || v === undefined || Number.isNaN(v))
			return;
		if (k < 0 || (lower ? v < values[k] : v > values[k]))
			k = i;
	});
	return k;
}

// runs: [{id, method, seed, params, evaluations: [{domain, metric, value}]}].
// For `metric`: the domains (sorted) and per run {run, values: {domain: v},
// avg (mean over the run's domains)}.
export function perRun(runs, metric) {
	const domains = new Set();
	const rows = runs.map((r) => {
		const values = {};
		for (const e of r.evaluations || [])
			if (e.metric === metric && e.value !== null) {
				values[e.domain] = e.value;
				domains.add(e.domain);
			}
		const vs = Object.values(values);
		return { run: r, values, avg: vs.length ? mean(vs) : null };
	});
	return { domains: [...domains].sort(), rows };
}

// The label of a run's group: its method and params (seed left out).
export function groupKey(run) {
	const p = { ...(run.params || {}) };
	delete p.seed;
	const keys = Object.keys(p).sort();
	return run.method + (keys.length ? ' ' + keys.map((k) => `${k}=${JSON.stringify(p[k])}`).join(' ') : '');
}

// perRun rows grouped by groupKey: [{key, rows, n, cells: {domain: {mean,
// std, n}}, avg: {mean, std, n}}] in the order groups first appear.
export function groups(table) {
	const by = new Map();
	for (const r of table.rows) {
		const k = groupKey(r.run);
		if (!by.has(k))
			by.set(k, []);
		by.get(k).push(r);
	}
	return [...by.entries()].map(([key, rows]) => {
		const cell = (vs) => ({ mean: vs.length ? mean(vs) : null, std: std(vs), n: vs.length });
		const cells = {};
		for (const d of table.domains)
			cells[d] = cell(rows.map((r) => r.values[d]).filter((v) => v !== undefined));
		return { key, rows, n: rows.length, cells, avg: cell(rows.map((r) => r.avg).filter((v) => v !== null)) };
	});
}
