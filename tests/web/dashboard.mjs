// tests/web/dashboard.mjs: the dashboard in Debian's chromium (headless,
// driven by playwright-core) against the real modulad of dashboard.sh.
// Seeds the registry through the API (experiments, runs, jobs, cancels,
// artifacts, models, datasets) and, where the API has no way in, with
// sqlite3 (job states, workers, metrics, evaluations, experts, routers);
// then checks that each page shows the seeded numbers, that the compare
// view's means and stds are the ones computed here, that curves grow
// while metrics arrive, and that operator actions need an operator token.
// Screenshots go to $top_builddir/tests/web/screenshots/. Prints TAP.
import { createHash } from 'node:crypto';
import { api, browser, done, env, is, ok, screenshotDir, sql } from './lib.mjs';

const now = Date.now();
const DOMAINS = ['code', 'logic', 'math'];
const METHODS = ['modula-flan', 'modula-res', 'lora'];
const acc = (mi, seed, di) => Math.round((0.40 + 0.08 * mi + 0.05 * di + 0.013 * ((seed * 7 + di * 3) % 5)) * 1e4) / 1e4;
const f4 = (v) => v.toFixed(4);
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const sd = (xs) => Math.sqrt(xs.reduce((a, b) => a + (b - mean(xs)) ** 2, 0) / (xs.length - 1));

async function upload(text) {
	const bytes = new TextEncoder().encode(text);
	const sha = createHash('sha256').update(bytes).digest('hex');
	await api('PUT', `/artifacts/${sha}?kind=blob`, bytes);
	return sha;
}

// ---- seeding ---------------------------------------------------------------
const runSpecs = [];
for (const [mi, m] of METHODS.entries())
	for (const seed of m === 'lora' ? [1] : [1, 2, 3])
		runSpecs.push({ method: m, seed, params: { rank: 8 }, mi });
const exp = await api('POST', '/experiments', { name: 'flan-vs-res', spec: { domains: DOMAINS }, runs: runSpecs.map(({ mi, ...r }) => r) });
const runs = exp.runs.map((id, i) => ({ id, ...runSpecs[i] }));
for (const r of runs) {
	const j = await api('POST', '/jobs', { jobs: [
		{ kind: 'train', name: 'u', run: r.id, spec: { stage: 'universal' } },
		{ kind: 'train', name: 'd', deps: ['u'], run: r.id, spec: { stage: 'domain' } },
		{ kind: 'train', name: 'r', deps: ['d'], run: r.id, spec: { stage: 'router' } },
		{ kind: 'eval', deps: ['r'], run: r.id }] });
	[r.u, r.d, r.r, r.e] = j.ids;
}
const done6 = runs.filter((r) => r.method !== 'lora');
const live = runs.find((r) => r.method === 'lora');
const [readyA] = (await api('POST', '/jobs', { kind: 'noop' })).ids;
await api('POST', '/jobs', { kind: 'noop' });
const [sleepy] = (await api('POST', '/jobs', { kind: 'sleep', spec: { seconds: 60 } })).ids;
await api('POST', `/jobs/${sleepy}/cancel`, { reason: 'seeded cancel' });
const [failing] = (await api('POST', '/jobs', { kind: 'train', spec: { broken: true } })).ids;
const bulk = await api('POST', '/experiments', { name: 'bulk', runs: Array.from({ length: 250 }, (_, i) => ({ method: 'lora', seed: i % 5 })) });
const maxRun = Math.max(...bulk.runs);

const outSha = await upload('universal expert bytes');
const modelSha = await upload('tiny model bytes');
await api('POST', '/models', { name: 'tiny-llama', artifact: modelSha, config: { layers: 4, dim: 128 } });
await api('POST', '/datasets', { name: 'suite-math', split: 'train', domain: 'math', artifact: outSha, rows: 1234 });

const r1 = done6[0];
const route = (layer, d, x) => Math.round((0.1 + 0.2 * layer + (d === x ? 0.5 : 0) + 0.01 * DOMAINS.indexOf(d)) * 1e4) / 1e4;
let s = `BEGIN;
UPDATE jobs SET state = 'succeeded', deps_left = 0, attempts = 1, worker = 'w-gpu-1', started_ms = ${now - 600000},
  finished_ms = ${now - 300000} WHERE run_id IN (${done6.map((r) => r.id)});
UPDATE jobs SET state = 'running', deps_left = 0, attempts = 1, lease_owner = 'w-gpu-1', worker = 'w-gpu-1',
  lease_deadline = ${now + 3600000}, leased_ms = ${now - 60000}, started_ms = ${now - 55000} WHERE id = ${live.u};
UPDATE jobs SET state = 'failed', attempts = 3, finished_ms = ${now - 1000}, error = 'engine exited with status 1' WHERE id = ${failing};
INSERT INTO workers (id, host, backend, gpu_mem_mb, slots, state, first_seen, last_seen) VALUES
  ('w-gpu-1', 'node1', 2, 81920, 1, 'up', ${now - 3600000}, ${now - 2000}),
  ('w-cpu-2', 'node2', 1, 0, 2, 'down', ${now - 7200000}, ${now - 900000});
INSERT INTO job_outputs (job_id, name, sha256) VALUES (${r1.u}, 'expert.safetensors', '${outSha}');
INSERT INTO experts (name, role, domain, rank, artifact, job_id, created_ms) VALUES
  ('universal-r1', 'universal', NULL, 16, '${outSha}', ${r1.u}, ${now}),
  ('math-r1', 'domain', 'math', 8, '${outSha}', ${r1.d}, ${now});
INSERT INTO routers (name, kind, artifact, job_id, created_ms) VALUES ('router-r1', 'modula', '${outSha}', ${r1.r}, ${now});
WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 1999)
INSERT INTO metrics (job_id, run_id, key, step, value, t_ms)
  SELECT ${live.u}, ${live.id}, 'loss', i, 3.0 / (1 + i / 100.0) + 0.5, ${now} + i FROM s
  UNION ALL SELECT ${live.u}, ${live.id}, 'lr', i, 0.001 * (1 - i / 4000.0), ${now} + i FROM s;
`;
for (const r of done6) {
	s += `WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 299)
INSERT INTO metrics (job_id, run_id, key, step, value, t_ms) SELECT ${r.u}, ${r.id}, 'loss', i, ${2 + r.mi} / (1 + i / 50.0) + ${r.seed / 10}, ${now} FROM s;\n`;
	for (const [di, d] of DOMAINS.entries()) {
		const a = acc(r.mi, r.seed, di);
		s += `INSERT INTO evaluations (run_id, job_id, domain, metric, value, created_ms) VALUES
  (${r.id}, ${r.e}, '${d}', 'accuracy', ${a}, ${now}), (${r.id}, ${r.e}, '${d}', 'loss', ${f4(2 - a)}, ${now});\n`;
	}
}
for (const layer of [0, 1])
	for (const d of DOMAINS)
		for (const x of ['*', ...DOMAINS])
			s += `INSERT INTO evaluations (run_id, job_id, domain, metric, value, created_ms) VALUES (${r1.id}, ${r1.e}, '${d}', 'router.L${layer}.${x}', ${route(layer, d, x)}, ${now});\n`;
sql(s + 'COMMIT;');
const expectStates = { pending: 3, ready: 2, leased: 0, running: 1, succeeded: 24, failed: 1, cancelled: 1 };

// ---- the browser -------------------------------------------------------------
const ctx = await browser();
const page = ctx.pages()[0] || await ctx.newPage();
const shots = screenshotDir();
const requests = [], errors = [];
ctx.on('request', (rq) => requests.push(rq.url()));
page.on('pageerror', (e) => errors.push(String(e)));
page.on('console', (m) => m.type() === 'error' && !/the server responded with a status of 40[13]/.test(m.text()) && errors.push(m.text()));

async function open(hash, p = page) {
	if (p.url().startsWith(env.base))
		await p.evaluate(() => { document.getElementById('view').dataset.ready = '0'; });
	await p.goto(`${env.base}/#${hash}`);
	await p.waitForSelector('#view[data-ready="1"]');
}
const texts = (sel, p = page) => p.$$eval(sel, (els) => els.map((e) => e.textContent.trim()));
const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

try {
	// overview
	await open('/');
	const counts = await page.$$eval('[data-testid=job-states] a', (els) => Object.fromEntries(els.map((e) => [e.dataset.state, Number(e.querySelector('b').textContent)])));
	is('overview: jobs by state are the seeded counts', counts, { all: 32, ...expectStates });
	const workers = await texts('[data-testid=workers] tbody tr');
	ok('overview: the GPU worker is up on cuda and runs the live job', workers.some((w) => w.includes('w-gpu-1') && w.includes('up') && w.includes('cuda') && w.includes(`${live.u} train`)), workers);
	ok('overview: the lost worker is down and idle', workers.some((w) => w.includes('w-cpu-2') && w.includes('down') && w.includes('idle')), workers);
	const events = await texts('[data-testid=events] tbody tr');
	ok('overview: recent events show the seeded cancel', events.some((e) => e.includes('job.cancelled') && e.includes('seeded cancel')), events);
	await shot('overview');

	// experiments
	await open('/experiments');
	const exps = await texts('[data-testid=experiments] tbody tr');
	ok('experiments: both seeded experiments are listed', exps.some((e) => e.includes('flan-vs-res')) && exps.some((e) => e.includes('bulk')), exps);
	await open(`/experiments/${exp.id}`);
	is('experiment: its 7 runs', (await texts('[data-testid=runs] tbody tr')).length, 7);
	await page.evaluate(() => { document.getElementById('view').dataset.ready = '0'; });
	await page.click('[data-testid=flan-vs-res]');
	await page.waitForSelector('#view[data-view="compare"][data-ready="1"]');
	ok('experiment: MoDULA-Flan vs MoDULA-Res is one click away', page.url().includes(`exp=${exp.id}`) && page.url().includes('methods=modula-flan,modula-res'), page.url());

	// compare
	const want = ['modula-flan', 'modula-res'].map((m) => {
		const rs = done6.filter((r) => r.method === m);
		const cells = DOMAINS.map((d, di) => rs.map((r) => acc(r.mi, r.seed, di)));
		const avgs = rs.map((r) => mean(DOMAINS.map((d, di) => acc(r.mi, r.seed, di))));
		return [`${m} rank=8`, '3', ...cells.map((c) => `${f4(mean(c))} ± ${f4(sd(c))}`), `${f4(mean(avgs))} ± ${f4(sd(avgs))}`];
	});
	const got = await page.$$eval('[data-testid=groups] tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent.trim())));
	is('compare: per-domain mean ± std over 3 seeds and the average, as computed here', got, want);
	const bestRows = await page.$$eval('[data-testid=groups] tbody tr', (trs) => [...trs[0].children].map((_, c) => trs.findIndex((tr) => tr.children[c].classList.contains('best'))));
	const wantBest = [-1, -1, ...DOMAINS.map((_, i) => (mean(done6.filter((r) => r.mi === 1).map((r) => acc(1, r.seed, i))) > mean(done6.filter((r) => r.mi === 0).map((r) => acc(0, r.seed, i))) ? 1 : 0)), 1];
	is('compare: the best of each column is marked', bestRows, wantBest);
	is('compare: one row per run', (await texts('[data-testid=per-run] tbody tr')).length, 6);
	await page.waitForFunction(() => document.querySelector('[data-testid=overlay]')?.dataset.series === '6');
	ok('compare: the loss curves of the 6 runs are overlaid', true);
	await shot('compare');
	const url = page.url();
	const other = await ctx.newPage();
	await open(url.slice(url.indexOf('#') + 1), other);
	is('compare: its URL reopens the same table in a new tab', await other.$$eval('[data-testid=groups] tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent.trim()))), want);
	await other.close();
	await open(`/compare?exp=${exp.id}&metric=loss`);
	const lossBest = await page.$$eval('[data-testid=per-run] tbody tr', (trs) => trs.findIndex((tr) => tr.lastElementChild.classList.contains('best')));
	const lossAvg = runs.map((r) => (r.method === 'lora' ? null : mean(DOMAINS.map((d, di) => 2 - acc(r.mi, r.seed, di)))));
	is('compare: for a loss the smallest average is the best', lossBest,
		lossAvg.reduce((k, v, i) => (v !== null && (k < 0 || v < lossAvg[k]) ? i : k), -1));

	// runs list: 257 runs, cursor paging, filters, sorts by the server
	await open('/runs');
	let ids = await texts('[data-testid=runs] tbody tr td:first-child');
	is('runs: a page of 100, newest first', [ids.length, Number(ids[0])], [100, maxRun]);
	await page.evaluate(() => { document.getElementById('view').dataset.ready = '0'; });
	await page.click('[data-testid=next]');
	await page.waitForSelector('#view[data-ready="1"]');
	ids = await texts('[data-testid=runs] tbody tr td:first-child');
	is('runs: next page by cursor', [ids.length, Number(ids[0])], [100, maxRun - 100]);
	await page.evaluate(() => { document.getElementById('view').dataset.ready = '0'; });
	await page.click('[data-testid=prev]');
	await page.waitForSelector('#view[data-ready="1"]');
	ids = await texts('[data-testid=runs] tbody tr td:first-child');
	is('runs: previous page', Number(ids[0]), maxRun);
	await open('/runs?method=modula-res');
	is('runs: filter by method', (await texts('[data-testid=runs] tbody tr td:first-child')).map(Number), done6.filter((r) => r.method === 'modula-res').map((r) => r.id).reverse());
	await open('/runs?method=modula-flan&sort=seed&order=desc');
	is('runs: sort by seed', await texts('[data-testid=runs] tbody tr td:nth-child(4)'), ['3', '2', '1']);
	// Sorting by a column covers all 257 runs, not the page: the first row
	// after a click is sqlite3's first row of the whole table.
	const firstOf = (order) => sql(`SELECT id || ' ' || method FROM runs ORDER BY ${order} LIMIT 1;`).trim();
	const clickHeader = async (key) => {
		await page.evaluate(() => { document.getElementById('view').dataset.ready = '0'; });
		await page.click(`[data-testid=runs] th[data-key=${key}]`);
		await page.waitForSelector('#view[data-ready="1"]');
	};
	const firstRow = async () => (await texts('[data-testid=runs] tbody tr:first-child td')).filter((_, i) => i === 0 || i === 2).join(' ');
	await open('/runs');
	await clickHeader('method');
	is('runs: a click on method sorts every run, ascending', await firstRow(), firstOf('method, id'));
	await clickHeader('method');
	is('runs: a second click sorts descending (a row far from the first page)', await firstRow(), firstOf('method DESC, id DESC'));
	ok('runs: the URL keeps the sort', page.url().includes('sort=method') && page.url().includes('order=desc'), page.url());
	await clickHeader('seed');
	is('runs: sort by seed over every run', await firstRow(), firstOf('seed, id'));
	const pager = async (which) => {
		await page.evaluate(() => { document.getElementById('view').dataset.ready = '0'; });
		await page.click(`[data-testid=${which}]`);
		await page.waitForSelector('#view[data-ready="1"]');
		return firstRow();
	};
	const nth = (k) => sql(`SELECT id || ' ' || method FROM runs ORDER BY seed, id LIMIT 1 OFFSET ${k};`).trim();
	is('runs: the next pages of a sort continue it', [await pager('next'), await pager('next')], [nth(100), nth(200)]);
	is('runs: and previous goes back page by page', [await pager('prev'), await pager('prev')], [nth(100), nth(0)]);
	await open('/runs');
	await shot('runs');

	// run detail
	await open(`/runs/${r1.id}`);
	is('run: its DAG has 4 succeeded stages', await page.$$eval('[data-testid=dag] [data-job]', (els) => els.map((e) => e.dataset.state)), ['succeeded', 'succeeded', 'succeeded', 'succeeded']);
	const evalRows = await page.$$eval('[data-testid=evaluations] tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent.trim())));
	const a1 = DOMAINS.map((d, di) => acc(0, 1, di));
	is('run: per-domain evaluation with the average', evalRows, [...DOMAINS.map((d, i) => [d, f4(a1[i]), f4(2 - a1[i])]), ['average', f4(mean(a1)), f4(mean(a1.map((a) => 2 - a)))]]);
	const cell = await page.$eval('.heat[data-layer="L1"] tbody tr:nth-child(3) td:nth-child(5)', (td) => td.textContent);
	ok('run: router heatmaps per layer (domain × expert)', (await page.$$('.heat')).length === 2 && cell === f4(route(1, 'math', 'math')), cell);
	const href = await page.$eval('[data-testid=artifacts] a[download]', (a) => a.href);
	const body = await (await page.request.get(href)).text();
	is('run: artifacts download', body, 'universal expert bytes');
	await page.waitForSelector('.chart[data-key="loss"][data-points="300"]');
	ok('run: its loss curve', true);
	await shot('run');

	// live curves
	await open(`/runs/${live.id}`);
	await page.waitForSelector('.chart[data-key="loss"][data-points="2000"]');
	await page.waitForSelector('.chart[data-key="lr"][data-points="2000"]');
	ok('live: loss and lr curves with 2000 points each', true);
	is('live: loss comes first, then lr', await page.$$eval('[data-testid=curves] .chart', (els) => els.map((e) => e.dataset.key)), ['loss', 'lr']);
	const polls = Number(await page.$eval('[data-testid=curves]', (e) => e.dataset.polls));
	sql(`WITH RECURSIVE s(i) AS (SELECT 2000 UNION ALL SELECT i + 1 FROM s WHERE i < 2499)
INSERT INTO metrics (job_id, run_id, key, step, value, t_ms) SELECT ${live.u}, ${live.id}, 'loss', i, 3.0 / (1 + i / 100.0) + 0.5, ${now} + i FROM s;`);
	await page.waitForSelector('.chart[data-key="loss"][data-points="2500"]', { timeout: 30000 });
	const polls2 = Number(await page.$eval('[data-testid=curves]', (e) => e.dataset.polls));
	ok('live: the loss curve grows to 2500 points while the page stays open', polls2 > polls, `${polls} -> ${polls2}`);
	is('live: the running stage is shown running', await page.$eval(`[data-testid=dag] [data-job="${live.u}"]`, (e) => e.dataset.state), 'running');
	await shot('run-live');

	// registry
	const reg = {};
	for (const tab of ['models', 'datasets', 'experts', 'routers']) {
		await open(`/registry?tab=${tab}`);
		reg[tab] = await page.$$eval(`[data-testid=${tab}] tbody tr`, (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent.trim())));
		if (tab === 'experts')
			await shot('registry-experts');
	}
	ok('registry: base model', reg.models.length === 1 && reg.models[0][1] === 'tiny-llama', reg.models);
	ok('registry: dataset with domain, split, rows', reg.datasets.length === 1 && reg.datasets[0].slice(1, 5).join('|') === 'suite-math|math|train|1234', reg.datasets);
	is('registry: experts with role, domain, rank and job', reg.experts.map((r) => r.slice(1, 5).concat(r[6])), [['universal-r1', 'universal', '', '16', String(r1.u)], ['math-r1', 'domain', 'math', '8', String(r1.d)]]);
	ok('registry: router with its job', reg.routers.length === 1 && reg.routers[0][1] === 'router-r1' && reg.routers[0][4] === String(r1.r), reg.routers);

	// operator actions
	await open(`/jobs/${readyA}`);
	ok('read-only without a token: no cancel button', (await page.$$('[data-action=cancel]')).length === 0 && (await page.textContent('#view')).includes('read-only'));
	await open('/submit');
	ok('read-only without a token: submit is disabled', await page.$eval('#view form button[type=submit]', (b) => b.disabled));
	await open(`/jobs/${readyA}`);
	await page.fill('#token-input', env.view);
	await page.click('#token-save');
	await page.waitForSelector('[data-action=cancel]');
	await page.click('[data-action=cancel]');
	const refused = await (await page.waitForSelector('.actions .msg.error')).textContent();
	ok('a viewer token is refused by the daemon (403) and shown', refused.includes('403'), refused);
	is('... and the job is still ready', (await api('GET', `/jobs/${readyA}`)).state, 'ready');
	await page.click('#token-clear');
	await page.fill('#token-input', env.op);
	await page.click('#token-save');
	await page.waitForSelector('[data-action=cancel]:not([disabled])');
	await page.click('[data-action=cancel]');
	await page.waitForSelector('#view .kv .badge.cancelled');
	is('an operator token cancels the job', (await api('GET', `/jobs/${readyA}`)).state, 'cancelled');
	is('the token is kept in sessionStorage only', await page.evaluate(() => [sessionStorage.getItem('modula.token'), localStorage.length]), [env.op, 0]);
	await open(`/jobs/${failing}`);
	await page.click('[data-action=retry]:not([disabled])');
	await page.waitForSelector('#view .kv .badge.ready');
	is('an operator token retries a failed job', (await api('GET', `/jobs/${failing}`)).state, 'ready');
	await open('/submit');
	await page.fill('textarea', '{"kind": "noop", "priority": 7}');
	await page.click('#view form button[type=submit]');
	const link = await (await page.waitForSelector('.msg.ok a')).textContent();
	const sub = await api('GET', `/jobs/${link}`);
	is('submit a spec with an operator token', [sub.kind, sub.priority], ['noop', 7]);
	await shot('operator');
} catch (e) {
	ok(`the browser session ran through (${e.message.split('\n')[0]})`, false, e.stack);
	await shot('failure').catch(() => {});
}
ok('nothing was loaded from anywhere but modulad', requests.every((u) => u.startsWith(env.base + '/') || u.startsWith('data:')), requests.filter((u) => !u.startsWith(env.base)));
ok('no script errors in the page', errors.length === 0, errors);
await ctx.close();
process.exit(done());
