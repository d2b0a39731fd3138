// chart.js: line charts of metric series on uPlot (npm `uplot`, served from
// web/node_modules by modulad): several named series over a step axis,
// grown in place as points arrive. Not a general charting layer.
import uPlot from '../node_modules/uplot/dist/uPlot.esm.js';

const PALETTE = ['#2456c8', '#d9480f', '#2b8a3e', '#862e9c', '#c2255c', '#0b7285', '#e67700', '#5c940d', '#364fc7', '#a61e4d'];

export function color(i) {
	return i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 137.508) % 360}, 60%, 45%)`;
}

// A y tick short enough to tell neighbours apart (lr is often ~1e-4).
function s_tick(v) {
	if (v === 0)
		return '0';
	return Math.abs(v) < 0.01 || Math.abs(v) >= 1e5 ? v.toExponential(2) : String(Number(v.toPrecision(4)));
}

export class Curves {
	// opts: {title, height, ylabel}
	constructor(el, opts) {
		this.el = el;
		this.opts = opts;
		this.series = new Map();     // name -> {xs, ys}
		this.plot = null;
		this.shape = '';
		this.resize = new ResizeObserver(() => this.plot && this.plot.setSize(this.s_size()));
		this.resize.observe(el);
	}

	s_size() {
		return { width: Math.max(300, this.el.clientWidth), height: this.opts.height || 240 };
	}

	// Add points [[step, value, ...], ...] to series `name` (steps that
	// are not past its last one are dropped).
	append(name, points) {
		let s = this.series.get(name);
		if (!s)
			this.series.set(name, (s = { xs: [], ys: [] }));
		let last = s.xs.length ? s.xs[s.xs.length - 1] : -Infinity;
		for (const p of points)
			if (p[0] > last) {
				s.xs.push(p[0]);
				s.ys.push(p[1]);
				last = p[0];
			}
	}

	points() {
		let n = 0;
		for (const s of this.series.values())
			n += s.xs.length;
		return n;
	}

	draw() {
		const names = [...this.series.keys()];
		const tables = names.map((n) => [this.series.get(n).xs, this.series.get(n).ys]);
		const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
		const shape = names.join('\u0000');
		this.el.dataset.points = String(this.points());
		this.el.dataset.series = String(names.length);
		if (this.plot && shape === this.shape) {
			this.plot.setData(data);
			return;
		}
		this.plot?.destroy();
		this.shape = shape;
		this.plot = new uPlot({
			...this.s_size(),
			title: this.opts.title,
			legend: { show: names.length <= 12 },
			cursor: { drag: { x: true, y: false } },
			scales: { x: { time: false } },
			axes: [{ label: 'step' }, { label: this.opts.ylabel || '', size: 64, values: (u, splits) => splits.map(s_tick) }],
			series: [{ label: 'step' }, ...names.map((n, i) => ({ label: n, stroke: color(i), width: 1.5, spanGaps: true, points: { show: false } }))],
		}, data, this.el);
	}

	destroy() {
		this.resize.disconnect();
		this.plot?.destroy();
		this.plot = null;
	}
}
