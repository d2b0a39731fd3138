// dag.js: a job DAG drawn as SVG, one column per depth (a job sits right
// of everything it needs), boxes coloured by state and linked to the job.
// Meant for the few stages of a run, not for the whole queue.
import { h } from './ui.js';

const SVG = 'http://www.w3.org/2000/svg';
const FILL = { succeeded: '#1a7f37', failed: '#c62828', cancelled: '#7b6f5c', running: '#2456c8', leased: '#2456c8', ready: '#b76e00', pending: '#8a94a6' };
const W = 170, H = 44, GX = 60, GY = 16;

function s(tag, attrs, ...kids) {
	const el = document.createElementNS(SVG, tag);
	for (const [k, v] of Object.entries(attrs))
		el.setAttribute(k, v);
	el.append(...kids);
	return el;
}

// jobs: [{id, kind, state, deps: [{id}]}] (deps outside `jobs` are ignored).
export function dag(jobs) {
	const byId = new Map(jobs.map((j) => [j.id, j]));
	const depth = new Map();
	const depthOf = (j, seen = new Set()) => {
		if (depth.has(j.id))
			return depth.get(j.id);
		seen.add(j.id);
		let d = 0;
		for (const p of j.deps || [])
			if (byId.has(p.id) && !seen.has(p.id))
				d = Math.max(d, depthOf(byId.get(p.id), seen) + 1);
		depth.set(j.id, d);
		return d;
	};
	const cols = [];
	for (const j of jobs)
		(cols[depthOf(j)] ||= []).push(j);
	const pos = new Map();
	cols.forEach((col, c) => col.forEach((j, r) => pos.set(j.id, { x: 10 + c * (W + GX), y: 10 + r * (H + GY) })));
	const width = 20 + cols.length * (W + GX) - GX;
	const height = 20 + Math.max(...cols.map((c) => c.length)) * (H + GY) - GY;
	const svg = s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'job DAG' },
		s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' },
			s('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#8a94a6' }))));
	for (const j of jobs)
		for (const p of j.deps || []) {
			if (!pos.has(p.id))
				continue;
			const a = pos.get(p.id), b = pos.get(j.id);
			const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
			svg.append(s('path', { d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}`, fill: 'none', stroke: '#8a94a6', 'stroke-width': 1.5, 'marker-end': 'url(#arrow)' }));
		}
	for (const j of jobs) {
		const { x, y } = pos.get(j.id);
		const fill = FILL[j.state] || '#8a94a6';
		svg.append(s('a', { href: `#/jobs/${j.id}`, 'data-job': j.id, 'data-state': j.state },
			s('rect', { x, y, width: W, height: H, rx: 7, fill: '#fff', stroke: fill, 'stroke-width': 2 }),
			s('rect', { x, y, width: 6, height: H, rx: 3, fill }),
			s('text', { x: x + 14, y: y + 18, fill: '#1d2330', 'font-weight': 600 }, `${j.id} · ${j.kind}`),
			s('text', { x: x + 14, y: y + 34, fill }, j.state)));
	}
	return h('div', { class: 'dag', 'data-testid': 'dag' }, svg);
}
