// actions.js: the operator's buttons on a job (cancel, retry). Shown only
// when a token is entered; the daemon decides whether it is good enough,
// and its refusal is shown as it comes.
import { post, token } from './api.js';
import { h, message } from './ui.js';

const ENDED = ['succeeded', 'failed', 'cancelled'];

// Buttons for `job` ({id, state}); `done()` runs after a success.
export function jobActions(job, done) {
	if (!token())
		return h('span', { class: 'muted', title: 'enter an operator token at the top right' }, 'read-only');
	const out = h('span', { class: 'actions row' });
	const act = async (what, body) => {
		for (const b of out.querySelectorAll('button'))
			b.disabled = true;
		out.querySelector('.msg')?.remove();
		try {
			const r = await post(`/jobs/${job.id}/${what}`, body);
			out.append(message('ok', `job ${r.id}: ${r.state}`));
			done && done();
		} catch (e) {
			out.append(message('error', `${what} refused (${e.status}): ${e.message}`));
			for (const b of out.querySelectorAll('button'))
				b.disabled = false;
		}
	};
	out.append(
		h('button', { class: 'danger', 'data-action': 'cancel', disabled: ENDED.includes(job.state),
			onclick: () => act('cancel', { reason: 'cancelled from the dashboard' }) }, 'Cancel'),
		h('button', { 'data-action': 'retry', disabled: !['failed', 'cancelled'].includes(job.state),
			onclick: () => act('retry') }, 'Retry'));
	return out;
}
