/* ckpt.h: training checkpoints, one safetensors file each.
 *
 * A checkpoint holds every trainable tensor ("param/NAME"), its AdamW
 * moments ("adam_m/NAME", "adam_v/NAME") and, in the __metadata__ key
 * "modula_state", a JSON text the trainer owns (step, data position, RNG
 * seed, the job's configuration). Files are written by st_writer_write:
 * temporary file, fsync, rename, so a reader sees a whole checkpoint or
 * none. Names: DIR/step-00000042.safetensors. Not a model export: the
 * outputs of a run are written by the trainer in PEFT / Hugging Face form.
 */
#ifndef MODULA_CKPT_H
#define MODULA_CKPT_H

#include "worker/optim.h"
#include "worker/params.h"

#include <stddef.h>

/* Write DIR/step-<step>.safetensors; its path goes to `path`. 0 or -1. */
int ckpt_save(const char *dir, long step, const params_t *p, const optim_t *o,
	      const char *state_json, char *path, size_t n);

/* Restore the trainables and moments of `p`/`o` from `path` (names and
 * shapes must match) and return the state JSON (free() it). 0, or -1 via
 * err_set() naming the file and the tensor. */
int ckpt_load(const char *path, const params_t *p, optim_t *o, char **state_json);

/* The newest checkpoint in DIR that opens and validates: 1 with its path,
 * 0 when there is none (or DIR does not exist), -1 on other errors. */
int ckpt_latest(const char *dir, char *path, size_t n);

#endif
