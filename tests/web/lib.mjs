// tests/web/lib.mjs: helpers of the browser tests and the render benchmark
// (imported, never run): TAP output, the API and the registry (sqlite3 CLI)
// of the modulad that tests/web/daemon.sh started, and Debian's chromium
// driven by playwright-core from web/node_modules.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';

export const env = {
	base: process.env.WEB_BASE, db: process.env.WEB_DB, op: process.env.WEB_OP, view: process.env.WEB_VIEW,
	profile: process.env.WEB_PROFILE, srcdir: process.env.top_srcdir, builddir: process.env.top_builddir,
};

let n = 0, failed = 0;
export function ok(what, cond, detail) {
	n++;
	console.log(`${cond ? 'ok' : 'not ok'} ${n} - ${what}`);
	if (!cond) {
		failed++;
		if (detail !== undefined)
			console.log(`# ${String(typeof detail === 'string' ? detail : JSON.stringify(detail)).split('\n').join('\n# ')}`);
	}
}
export function is(what, got, want) {
	const a = JSON.stringify(got), b = JSON.stringify(want);
	ok(what, a === b, `got ${a}, want ${b}`);
}
export function done() {
	console.log(`1..${n}`);
	return failed ? 1 : 0;
}

export async function api(method, path, body, tok = env.op) {
	const headers = { Authorization: `Bearer ${tok}` };
	if (body !== undefined && !(body instanceof Uint8Array))
		headers['Content-Type'] = 'application/json';
	const res = await fetch(env.base + '/api/v1' + path, { method, headers,
		body: body === undefined ? undefined : body instanceof Uint8Array ? body : JSON.stringify(body) });
	const text = await res.text();
	if (!res.ok)
		throw new Error(`${method} ${path}: ${res.status} ${text}`);
	return text ? JSON.parse(text) : null;
}

// Run SQL on the registry (fixture rows the API has no way to add).
export function sql(text) {
	return execFileSync('sqlite3', ['-cmd', '.timeout 20000', env.db], { input: text, encoding: 'utf8' });
}

// A persistent context of Debian's chromium in the fresh profile folder.
export async function browser() {
	const require = createRequire(`${env.srcdir}/web/package.json`);
	const { chromium } = require('playwright-core');
	mkdirSync(env.profile, { recursive: true });
	return chromium.launchPersistentContext(env.profile, {
		executablePath: '/usr/bin/chromium', headless: true, viewport: { width: 1400, height: 900 },
		args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
			'--disable-background-networking', '--disable-component-update', '--disable-sync'],
	});
}

export function screenshotDir() {
	const d = `${env.builddir}/tests/web/screenshots`;
	mkdirSync(d, { recursive: true });
	return d;
}

// The ms since `t0` of a performance.now() pair, rounded.
export const since = (t0) => Math.round((performance.now() - t0) * 10) / 10;
