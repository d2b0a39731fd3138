// views/submit.js: the operator's form to submit a job spec (one job or a
// batch, POST /jobs) or an experiment (POST /experiments), as JSON.
import { post, token } from '../api.js';
import { card, h, message } from '../ui.js';

const EXAMPLES = {
	jobs: { kind: 'train', spec: { method: 'lora', steps: 200 }, priority: 0 },
	experiments: { name: 'my-sweep', spec: {}, runs: [{ method: 'modula-res', seed: 1, params: {} }] },
};

export async function render(root, ctx) {
	const what = ctx.params.get('what') === 'experiments' ? 'experiments' : 'jobs';
	const text = h('textarea', { name: 'spec', spellcheck: false, 'aria-label': 'JSON' }, JSON.stringify(EXAMPLES[what], null, 2));
	const out = h('div');
	const form = h('form', { onsubmit: async (ev) => {
		ev.preventDefault();
		out.replaceChildren();
		let body;
		try {
			body = JSON.parse(text.value);
		} catch (e) {
			out.append(message('error', `not JSON: ${e.message}`));
			return;
		}
		try {
			const r = await post('/' + what, body);
			const links = what === 'jobs' ? r.ids.map((id) => h('a', { href: `#/jobs/${id}`, style: 'margin-right:8px' }, id)) :
				[h('a', { href: `#/experiments/${r.id}` }, `experiment ${r.id}`)];
			out.append(h('div', { class: 'msg ok', role: 'status' }, 'submitted: ', links));
		} catch (e) {
			out.append(message('error', `refused (${e.status}): ${e.message}`));
		}
	} }, text, h('div', { class: 'row', style: 'margin-top:10px' },
		h('button', { type: 'submit', class: 'primary', disabled: !token() }, what === 'jobs' ? 'Submit job(s)' : 'Create experiment'),
		token() ? null : h('span', { class: 'muted' }, 'read-only: enter an operator token at the top right to submit')));
	root.append(h('h1', null, 'Submit'));
	root.append(h('div', { class: 'tabs' },
		h('a', { href: '#/submit', class: what === 'jobs' ? 'active' : '' }, 'Jobs'),
		h('a', { href: '#/submit?what=experiments', class: what === 'experiments' ? 'active' : '' }, 'Experiment')));
	root.append(card(what === 'jobs' ? 'One job, or {"jobs": [...]} with deps by name (docs/api.md)' : 'An experiment and its runs',
		form, out));
}
