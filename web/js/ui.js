// ui.js: DOM helpers of the dashboard: element builder, formatting, state
// badges, sortable tables and messages. No templating, no virtual DOM.

// h('a', {href: '#/'}, 'text', child...): an element; attributes starting
// with "on" are listeners, `dataset` an object, false/null children skipped.
export function h(tag, attrs, ...children) {
	const el = document.createElement(tag);
	for (const [k, v] of Object.entries(attrs || {})) {
		if (v === undefined || v === null || v === false)
			continue;
		if (k.startsWith('on'))
			el.addEventListener(k.slice(2), v);
		else if (k === 'dataset')
			Object.assign(el.dataset, v);
		else if (k === 'class')
			el.className = v;
		else if (k in el && typeof v !== 'string')
			el[k] = v;
		else
			el.setAttribute(k, v === true ? '' : v);
	}
	for (const c of children.flat(Infinity))
		if (c !== undefined && c !== null && c !== false)
			el.append(c instanceof Node ? c : String(c));
	return el;
}

export function fmtTime(ms) {
	if (ms === null || ms === undefined)
		return '';
	const d = new Date(ms);
	const pad = (n) => String(n).padStart(2, '0');
	return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtAgo(ms) {
	if (ms === null || ms === undefined)
		return '';
	const s = Math.max(0, (Date.now() - ms) / 1000);
	if (s < 60)
		return `${Math.round(s)} s ago`;
	if (s < 3600)
		return `${Math.round(s / 60)} min ago`;
	if (s < 86400)
		return `${(s / 3600).toFixed(1)} h ago`;
	return `${(s / 86400).toFixed(1)} d ago`;
}

// A figure with 4 decimals (the precision of every table).
export function fmtNum(v) {
	if (v === null || v === undefined || Number.isNaN(v))
		return '–';
	return Number.isInteger(v) ? String(v) : v.toFixed(4);
}

export function badge(state) {
	return h('span', { class: 'badge ' + state }, state);
}

export function shortJson(v, max = 80) {
	const s = v && typeof v === 'object' ? JSON.stringify(v) : String(v ?? '');
	return s.length > max ? s.slice(0, max - 1) + '…' : s;
}

export function message(kind, text) {
	return h('div', { class: 'msg ' + kind, role: kind === 'error' ? 'alert' : 'status' }, text);
}

export function card(title, ...body) {
	return h('section', { class: 'card' }, title ? h('h2', null, title) : null, ...body);
}

// A table. cols: [{key, label, num, render(row) -> node|string, sort}]
// where `sort` (true or a key function) makes the header clickable;
// opts.sort = {key, asc}, opts.onSort(key) when a header is clicked,
// opts.rowAttrs(row) -> attributes of the <tr>.
export function table(cols, rows, opts = {}) {
	const head = h('tr', null, cols.map((c) => {
		const sorted = opts.sort && opts.sort.key === c.key;
		const cls = [c.num ? 'num' : '', c.sort ? 'sortable' : '', sorted ? 'sorted' : '',
			sorted && opts.sort.asc ? 'asc' : ''].filter(Boolean).join(' ');
		return h('th', { class: cls, dataset: { key: c.key }, onclick: c.sort && opts.onSort ? () => opts.onSort(c.key) : null },
			c.label ?? c.key);
	}));
	const body = rows.map((r) => h('tr', opts.rowAttrs ? opts.rowAttrs(r) : null, cols.map((c) => {
		const v = c.render ? c.render(r) : r[c.key];
		const cell = v instanceof Node ? v : typeof v === 'number' ? fmtNum(v) : (v ?? '');
		return h('td', { class: (c.num ? 'num ' : '') + (c.cls ? c.cls(r) : '') }, cell);
	})));
	return h('table', { class: 't', ...(opts.attrs || {}) }, h('thead', null, head), h('tbody', null, body));
}

// Sort rows in place by a column (its `sort` key function, else the value).
export function sortRows(rows, col, asc) {
	const key = typeof col.sort === 'function' ? col.sort : (r) => r[col.key];
	rows.sort((a, b) => {
		const x = key(a), y = key(b);
		const c = x === y ? 0 : x === null || x === undefined ? 1 : y === null || y === undefined ? -1 :
			typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
		return asc ? c : -c;
	});
	return rows;
}
