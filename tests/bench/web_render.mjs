// tests/bench/web_render.mjs: how long the dashboard takes, in Debian's
// chromium, to render the runs list and a compare of 100 runs with 10,000
// runs in the registry (each with evaluations; the 100 compared with a
// 1000-point loss curve each). Next to each figure: the same API requests
// made bare from node (8 in flight, as the dashboard does), and the ratio.
// A benchmark, not a test: it asserts nothing. Run by web_render.sh.
import { api, browser, env, sql } from '../web/lib.mjs';

const RUNS = 10000, COMPARED = 100, POINTS = 1000, REPEAT = 5;
const METHODS = ['lora', 'molora', 'modula-flan', 'modula-res'];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

let t = performance.now();
const exp = await api('POST', '/experiments', { name: 'bench', spec: {},
	runs: Array.from({ length: RUNS }, (_, i) => ({ method: METHODS[i % 4], seed: Math.floor(i / 4) % 5, params: { rank: 8, lr: 0.0002 } })) });
const ids = exp.runs;
const first = ids[0], last = ids[ids.length - 1];
const cmp = ids.slice(0, COMPARED);
sql(`BEGIN;
INSERT INTO evaluations (run_id, domain, metric, value, created_ms)
  SELECT r.id, d.name, m.name, 0.3 + (abs(random()) % 1000) / 2000.0, 0 FROM runs r,
  (SELECT 'code' AS name UNION ALL SELECT 'logic' UNION ALL SELECT 'math') d,
  (SELECT 'accuracy' AS name UNION ALL SELECT 'loss') m WHERE r.id BETWEEN ${first} AND ${last};
WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < ${POINTS - 1})
INSERT INTO metrics (job_id, run_id, key, step, value, t_ms)
  SELECT r.id, r.id, 'loss', i, 3.0 / (1 + i / 100.0) + (r.id % 7) / 10.0, 0 FROM runs r, s WHERE r.id BETWEEN ${first} AND ${cmp[cmp.length - 1]};
COMMIT;`);
console.log(`seeded ${RUNS} runs, ${RUNS * 6} evaluations, ${COMPARED} x ${POINTS} loss points in ${((performance.now() - t) / 1000).toFixed(1)} s`);

// Bare API time of what a view asks for.
async function pool(items, n, fn) {
	let k = 0;
	await Promise.all(Array.from({ length: n }, async () => { while (k < items.length) await fn(items[k++]); }));
}
const get = (path) => fetch(env.base + '/api/v1' + path).then((r) => r.json());
async function bare(fn) {
	const xs = [];
	for (let i = 0; i < REPEAT; i++) {
		const t0 = performance.now();
		await fn();
		xs.push(performance.now() - t0);
	}
	return median(xs);
}

const ctx = await browser();
const page = ctx.pages()[0] || await ctx.newPage();
await page.goto(`${env.base}/#/submit`);
await page.waitForSelector('#view[data-ready="1"]');

// In-page time from the hash change to the view being drawn.
async function view(hash) {
	const xs = [], table = [];
	for (let i = 0; i < REPEAT; i++) {
		await page.evaluate(() => new Promise((ok) => {
			const v = document.getElementById('view');
			if (location.hash === '#/submit')
				return ok();
			location.hash = '#/submit';
			const o = new MutationObserver(() => v.dataset.ready === '1' && v.dataset.view === 'submit' && (o.disconnect(), ok()));
			o.observe(v, { attributes: true });
		}));
		const r = await page.evaluate((h) => new Promise((ok) => {
			const v = document.getElementById('view');
			const t0 = performance.now();
			const o = new MutationObserver(() => {
				if (v.dataset.ready === '1') {
					o.disconnect();
					requestAnimationFrame(() => ok({ ms: performance.now() - t0, table: Number(v.dataset.tableMs || 0) }));
				}
			});
			o.observe(v, { attributes: true });
			location.hash = h;
		}), hash);
		xs.push(r.ms);
		table.push(r.table);
	}
	return { ms: median(xs), table: median(table) };
}

const rows = [];
const row = (what, ms, base) => rows.push([what, ms.toFixed(1), base.toFixed(1), (ms / base).toFixed(2)]);
row('runs list, 100 per page', (await view('#/runs')).ms, await bare(() => get('/runs?limit=100&order=desc')));
row('runs list, 1000 per page', (await view('#/runs?limit=1000')).ms, await bare(() => get('/runs?limit=1000&order=desc')));
row('runs list, filtered (method)', (await view('#/runs?method=modula-res')).ms, await bare(() => get('/runs?limit=100&order=desc&method=modula-res')));
row('runs list, sorted (method, desc)', (await view('#/runs?sort=method&order=desc')).ms, await bare(() => get('/runs?limit=100&order=desc&sort=method')));
const deep = sql(`SELECT id FROM runs ORDER BY seed, id LIMIT 1 OFFSET ${RUNS - 100};`).trim();
row('runs list, sorted (seed), last page', (await view(`#/runs?sort=seed&order=asc&after=${deep}`)).ms, await bare(() => get(`/runs?limit=100&order=asc&sort=seed&after=${deep}`)));
const c = await view(`#/compare?runs=${cmp.join(',')}`);
const apiRuns = await bare(() => pool(cmp, 8, (id) => get(`/runs/${id}`)));
const apiCurves = await bare(() => pool(cmp, 8, (id) => get(`/runs/${id}/metrics?key=loss&after_step=-1&limit=100000`)));
row(`compare ${COMPARED} runs: tables`, c.table, apiRuns);
row(`compare ${COMPARED} runs: tables + ${COMPARED} curves`, c.ms, apiRuns + apiCurves);
await ctx.close();

console.log(`\nmedian of ${REPEAT}, ms (chromium ${process.env.WEB_CHROMIUM || ''}); "API only" = the same requests from node, no rendering`);
const w = [38, 12, 12, 8];
console.log(['view', 'dashboard', 'API only', 'ratio'].map((x, i) => (i ? x.padStart(w[i]) : x.padEnd(w[i]))).join(''));
for (const r of rows)
	console.log(r.map((x, i) => (i ? x.padStart(w[i]) : x.padEnd(w[i]))).join(''));
