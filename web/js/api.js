// api.js: the dashboard's client of modulad's HTTP API (docs/api.md): JSON
// reads, operator mutations with the token kept in sessionStorage, cursor
// paging and a small concurrency pool. It is not a cache: views ask again.
const BASE = '/api/v1';
const TOKEN_KEY = 'modula.token';

export class ApiError extends Error {
	constructor(status, message) {
		super(message);
		this.status = status;
	}
}

export function token() {
	return sessionStorage.getItem(TOKEN_KEY) || '';
}

export function setToken(t) {
	if (t)
		sessionStorage.setItem(TOKEN_KEY, t);
	else
		sessionStorage.removeItem(TOKEN_KEY);
}

// "?a=1&b=2" from an object, leaving out empty values.
export function query(params) {
	const q = new URLSearchParams();
	for (const [k, v] of Object.entries(params || {}))
		if (v !== undefined && v !== null && v !== '')
			q.set(k, String(v));
	const s = q.toString();
	return s ? '?' + s : '';
}

async function s_answer(res) {
	const text = await res.text();
	let body = null;
	try {
		body = text ? JSON.parse(text) : null;
	} catch (e) {
		throw new ApiError(res.status, `bad JSON from the daemon (${res.status})`);
	}
	if (!res.ok)
		throw new ApiError(res.status, (body && body.error) || `HTTP ${res.status}`);
	return body;
}

export async function get(path, params) {
	return s_answer(await fetch(BASE + path + query(params), { headers: s_auth() }));
}

export async function post(path, body) {
	const headers = { 'Content-Type': 'application/json', ...s_auth() };
	return s_answer(await fetch(BASE + path, { method: 'POST', headers, body: JSON.stringify(body ?? {}) }));
}

function s_auth() {
	const t = token();
	return t ? { Authorization: 'Bearer ' + t } : {};
}

// The page before the one whose first row is `first` (an id), for any
// sort: ask the other way round from that row; the cursor that reopens
// that page is the row before it, one more step the other way round.
// Returns '' when the page before is the first page.
export async function prevCursor(path, params, first, limit) {
	const back = { ...params, order: params.order === 'desc' ? 'asc' : 'desc' };
	const page = await get(path, { ...back, after: first, limit });
	if (page.items.length < limit)
		return '';
	const before = await get(path, { ...back, after: page.items[page.items.length - 1].id, limit: 1 });
	return before.items.length ? before.items[0].id : '';
}

// Every item of a list (follows `next`), for small lists only.
export async function all(path, params) {
	const out = [];
	let after = '';
	for (;;) {
		const p = await get(path, { ...params, limit: 1000, after });
		out.push(...p.items);
		if (p.next === null || p.next === undefined)
			return out;
		after = p.next;
	}
}

// map(items, fn) with at most `n` calls in flight; keeps the order.
export async function pool(items, n, fn) {
	const out = new Array(items.length);
	let next = 0;
	async function lane() {
		while (next < items.length) {
			const i = next++;
			out[i] = await fn(items[i], i);
		}
	}
	await Promise.all(Array.from({ length: Math.min(n, items.length) }, lane));
	return out;
}

// Jobs per state from /metrics (Prometheus text): {ready: 3, ...}.
export async function jobStates() {
	const res = await fetch('/metrics', { headers: s_auth() });
	if (!res.ok)
		throw new ApiError(res.status, `GET /metrics: HTTP ${res.status}`);
	const out = {};
	for (const m of (await res.text()).matchAll(/^modula_jobs\{state="([a-z]+)"\} (\d+)/gm))
		out[m[1]] = Number(m[2]);
	return out;
}

// Every point of a series after `afterStep` ([[step, value, t_ms]...]).
export async function series(kind, id, key, afterStep) {
	const out = [];
	let after = afterStep ?? -1;
	for (;;) {
		const r = await get(`/${kind}/${id}/metrics`, { key, after_step: after, limit: 100000 });
		out.push(...r.points);
		if (r.points.length < 100000)
			return out;
		after = r.points[r.points.length - 1][0];
	}
}

export function artifactUrl(sha) {
	return `${BASE}/artifacts/${sha}`;
}
