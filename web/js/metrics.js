// metrics.js: live curves of jobs' metric series. One chart per key (loss
// and lr first), one series per job; every `interval` ms it asks each job
// for its keys and fetches only the points after the last step it holds.
import { get, series } from './api.js';
import { Curves } from './chart.js';
import { h } from './ui.js';

const FIRST = ['loss', 'lr'];

function s_rank(key) {
	const i = FIRST.indexOf(key);
	return i < 0 ? FIRST.length : i;
}

// sources: [{id (job id), label}]. Returns {stop(), ready (first fetch)}.
export function liveCurves(el, sources, interval = 2000) {
	const charts = new Map();     // key -> Curves
	const last = new Map();       // `${job}/${key}` -> last step held
	let stopped = false, timer = null;

	function s_chart(key) {
		let c = charts.get(key);
		if (c)
			return c;
		const div = h('div', { class: 'chart', dataset: { key } });
		el.querySelector(':scope > [data-empty]')?.remove();
		const after = [...el.children].find((d) => {
			const k = d.dataset.key;
			return s_rank(k) > s_rank(key) || (s_rank(k) === s_rank(key) && k > key);
		});
		el.insertBefore(div, after || null);
		c = new Curves(div, { title: key, ylabel: key });
		charts.set(key, c);
		return c;
	}

	async function s_poll() {
		const touched = new Set();
		for (const src of sources) {
			const { keys } = await get(`/jobs/${src.id}/metrics`);
			for (const k of keys) {
				const id = `${src.id}/${k.key}`;
				const have = last.has(id) ? last.get(id) : -1;
				if (k.last_step === null || k.last_step <= have)
					continue;
				const pts = await series('jobs', src.id, k.key, have);
				if (!pts.length)
					continue;
				last.set(id, pts[pts.length - 1][0]);
				s_chart(k.key).append(src.label, pts);
				touched.add(k.key);
			}
		}
		for (const k of touched)
			charts.get(k).draw();
		el.dataset.polls = String(Number(el.dataset.polls || 0) + 1);
	}

	async function s_loop() {
		if (stopped)
			return;
		if (!document.hidden)
			await s_poll().catch(() => {});
		if (!stopped)
			timer = setTimeout(s_loop, interval);
	}

	const ready = s_poll().catch(() => {}).then(() => {
		if (!stopped)
			timer = setTimeout(s_loop, interval);
	});
	return {
		ready,
		charts,
		stop() {
			stopped = true;
			clearTimeout(timer);
			for (const c of charts.values())
				c.destroy();
		},
	};
}
