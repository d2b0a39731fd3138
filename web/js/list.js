// list.js: one paged, filterable, sortable list over an API list endpoint
// (cursor paging: `after` is the id the page starts after, `order` asc or
// desc by id). The server filters and sorts by id; other columns sort the
// page in the browser. Everything lives in the URL, so a page reopens.
import { get, prevCursor } from './api.js';
import { h, table, sortRows } from './ui.js';

// spec: {route, api, filters: [{param, label, placeholder}], cols, order
// (default order), limits}. Returns the element (after one fetch).
export async function pagedList(ctx, spec) {
	const p = ctx.params;
	const limit = Number(p.get('limit')) || 100;
	const order = p.get('order') || spec.order || 'desc';
	const after = p.get('after') || '';
	const filters = {};
	for (const f of spec.filters || [])
		if (p.get(f.param))
			filters[f.param] = p.get(f.param);
	const sort = p.get('sort') || 'id';
	const asc = sort === 'id' ? order === 'asc' : p.get('dir') === 'asc';
	const state = () => ({ limit: limit === 100 ? '' : limit, order, after, ...filters,
		sort: sort === 'id' ? '' : sort, dir: sort === 'id' ? '' : p.get('dir') });
	const go = (changes) => ctx.go(spec.route, { ...state(), ...changes });

	const t0 = performance.now();
	const pg = await get(spec.api, { limit, order, after, ...filters });
	const rows = pg.items;
	if (sort !== 'id') {
		const col = spec.cols.find((c) => c.key === sort);
		if (col)
			sortRows(rows, col, asc);
	}
	const onSort = (key) => {
		if (key === 'id')
			go({ order: order === 'desc' ? 'asc' : 'desc', after: '', sort: '', dir: '' });
		else
			go({ sort: key, dir: sort === key && asc ? 'desc' : 'asc' });
	};

	const inputs = (spec.filters || []).map((f) => h('label', null, f.label,
		h('input', { name: f.param, value: filters[f.param] || '', placeholder: f.placeholder || '', size: f.size || 10 })));
	const form = h('form', { class: 'filters', onsubmit: (ev) => {
		ev.preventDefault();
		const changes = { after: '' };
		for (const f of spec.filters)
			changes[f.param] = form.elements[f.param].value.trim();
		go(changes);
	} }, inputs, inputs.length ? h('button', { type: 'submit' }, 'Filter') : null,
	h('label', null, 'per page', h('select', { name: 'limit', onchange: (ev) => go({ limit: ev.target.value, after: '' }) },
		[25, 50, 100, 250, 1000].map((n) => h('option', { value: n, selected: n === limit }, n)))));

	const first = rows.length ? rows[0].id : null;
	const ids = pg.items.map((x) => x.id);
	const firstId = ids.length ? (order === 'desc' ? Math.max(...ids) : Math.min(...ids)) : null;
	const prev = h('button', { disabled: !after, 'data-testid': 'prev', onclick: async () => {
		go({ after: await prevCursor(spec.api, { order, ...filters }, firstId, limit) });
	} }, '← Previous');
	const next = h('button', { disabled: pg.next === null, 'data-testid': 'next', onclick: () => go({ after: pg.next }) }, 'Next →');
	const ms = performance.now() - t0;
	const info = h('span', { class: 'muted' }, rows.length ? `${rows.length} shown (ids ${Math.min(...ids)}–${Math.max(...ids)}), ${order === 'desc' ? 'newest' : 'oldest'} first · ${ms.toFixed(0)} ms` : 'nothing here');
	return h('div', { class: 'paged', dataset: { first: first ?? '' } }, form,
		table(spec.cols, rows, { sort: { key: sort, asc }, onSort, attrs: { 'data-testid': spec.testid || 'list' } }),
		h('div', { class: 'pager' }, prev, next, info));
}
