// list.js: one paged, filterable, sortable list over an API list endpoint.
// The server filters, sorts (`sort` a column of the endpoint's allow-list,
// `order` asc or desc, ties by id) and pages by cursor (`after`: the id of
// the row the page starts after), so a page costs the same with 10,000
// rows as with 10 and a sort covers the whole list, not the page.
// Everything lives in the URL, so a page reopens as it was.
import { get, prevCursor } from './api.js';
import { h, table } from './ui.js';

// spec: {route, api, filters: [{param, label, placeholder}], cols (a
// column with `sort: true` is one the API sorts by), order (default order
// of the id sort), testid}. Returns the element (after one fetch).
export async function pagedList(ctx, spec) {
	const p = ctx.params;
	const limit = Number(p.get('limit')) || 100;
	const sort = p.get('sort') || 'id';
	const order = p.get('order') || (sort === 'id' ? spec.order || 'desc' : 'asc');
	const after = p.get('after') || '';
	const filters = {};
	for (const f of spec.filters || [])
		if (p.get(f.param))
			filters[f.param] = p.get(f.param);
	const asc = order === 'asc';
	const state = () => ({ limit: limit === 100 ? '' : limit, order, after, ...filters, sort: sort === 'id' ? '' : sort });
	const go = (changes) => ctx.go(spec.route, { ...state(), ...changes });
	const args = { order, ...filters, sort: sort === 'id' ? '' : sort };

	const t0 = performance.now();
	const pg = await get(spec.api, { ...args, limit, after });
	const rows = pg.items;
	const onSort = (key) => go({ sort: key === 'id' ? '' : key, after: '',
		order: key === sort ? (asc ? 'desc' : 'asc') : key === 'id' ? 'desc' : 'asc' });

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
	const prev = h('button', { disabled: !after, 'data-testid': 'prev', onclick: async () => {
		go({ after: await prevCursor(spec.api, args, first, limit) });
	} }, '← Previous');
	const next = h('button', { disabled: pg.next === null, 'data-testid': 'next', onclick: () => go({ after: pg.next }) }, 'Next →');
	const ms = performance.now() - t0;
	const label = (spec.cols.find((c) => c.key === sort) || {}).label || sort;
	const how = sort === 'id' ? (asc ? 'oldest first' : 'newest first') : `by ${label} ${asc ? 'ascending' : 'descending'}`;
	const info = h('span', { class: 'muted' }, rows.length ? `${rows.length} shown, ${how} · ${ms.toFixed(0)} ms` : 'nothing here');
	return h('div', { class: 'paged', dataset: { first: first ?? '' } }, form,
		table(spec.cols, rows, { sort: { key: sort, asc }, onSort, attrs: { 'data-testid': spec.testid || 'list' } }),
		h('div', { class: 'pager' }, prev, next, info));
}
