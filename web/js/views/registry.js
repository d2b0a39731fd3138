// views/registry.js: what the registry holds, one tab each: base models,
// datasets, experts (role, domain, rank, the job that made it), routers.
import { artifactUrl } from '../api.js';
import { pagedList } from '../list.js';
import { fmtTime, h, shortJson } from '../ui.js';

const id = { key: 'id', label: 'id', num: true, sort: true };
const created = { key: 'created_ms', label: 'created', sort: true, render: (r) => fmtTime(r.created_ms) };
const artifact = { key: 'artifact', label: 'artifact', cls: () => 'mono',
	render: (r) => r.artifact ? h('a', { href: artifactUrl(r.artifact), download: r.name || r.artifact }, r.artifact.slice(0, 12) + '…') : '–' };
const jobLink = { key: 'job', label: 'job', num: true, sort: true, render: (r) => r.job ? h('a', { href: `#/jobs/${r.job}` }, r.job) : '' };
const name = { key: 'name', label: 'name', sort: true };

const TABS = {
	models: { label: 'Base models', api: '/models', filters: [{ param: 'name', label: 'name' }],
		cols: [id, name, { key: 'config', label: 'config', cls: () => 'wrap mono', render: (r) => shortJson(r.config, 120) }, artifact, created] },
	datasets: { label: 'Datasets', api: '/datasets', filters: [{ param: 'domain', label: 'domain' }, { param: 'split', label: 'split', size: 6 }],
		cols: [id, name, { key: 'domain', label: 'domain', sort: true }, { key: 'split', label: 'split', sort: true },
			{ key: 'rows', label: 'rows', num: true, sort: true }, artifact, created] },
	experts: { label: 'Experts', api: '/experts', filters: [{ param: 'role', label: 'role', size: 9 }, { param: 'domain', label: 'domain' }, { param: 'job', label: 'job', size: 6 }],
		cols: [id, name, { key: 'role', label: 'role', sort: true }, { key: 'domain', label: 'domain', sort: true },
			{ key: 'rank', label: 'rank', num: true, sort: true }, { key: 'base_model', label: 'base', num: true, sort: true }, jobLink, artifact, created] },
	routers: { label: 'Routers', api: '/routers', filters: [{ param: 'job', label: 'job', size: 6 }],
		cols: [id, name, { key: 'kind', label: 'kind', sort: true }, { key: 'base_model', label: 'base', num: true, sort: true }, jobLink, artifact, created] },
};

export async function render(root, ctx) {
	const tab = TABS[ctx.params.get('tab')] ? ctx.params.get('tab') : 'models';
	const t = TABS[tab];
	root.append(h('h1', null, 'Registry'));
	root.append(h('div', { class: 'tabs' }, Object.entries(TABS).map(([k, v]) =>
		h('a', { href: `#/registry?tab=${k}`, class: k === tab ? 'active' : '', dataset: { tab: k } }, v.label))));
	const el = await pagedList({ ...ctx, go: (path, params) => ctx.go(path, { tab, ...params }) },
		{ route: '/registry', api: t.api, testid: tab, order: 'asc', filters: t.filters, cols: t.cols });
	root.append(h('section', { class: 'card' }, el));
}
