/* bundle.h: the files of the MoDULA methods (schema/bundle.md).
 *
 *   expert file   NAME.safetensors: lora_A/lora_B of every adapted layer
 *                 under PEFT's names, the expert's configuration in the
 *                 __metadata__ key "modula_expert" (JSON text)
 *   router file   router.safetensors: ...router.weight [n_route, in] per
 *                 adapted layer, "modula_router" metadata naming the
 *                 method and the expert of each row
 *   bundle        DIR/modula.json (the manifest: base model, method,
 *                 experts, router, sha256 of each file),
 *                 DIR/experts/NAME.safetensors, DIR/router.safetensors
 * Files are written deterministically (st_writer: sorted names, no time
 * stamps), so an unchanged expert writes the same bytes again: that is how
 * a finished bundle grows a domain with its old experts byte-identical.
 * Reading checks every shape against the model. Not a registry: the
 * daemon keeps track of where bundles live.
 */
#ifndef MODULA_BUNDLE_H
#define MODULA_BUNDLE_H

#include "worker/lora.h"
#include "worker/model.h"
#include "worker/moe.h"

#define BUNDLE_MANIFEST "modula.json"
#define BUNDLE_VERSION 1

/* What an expert file says about itself. No method: an expert is the
 * same file whichever method trained it (the universal expert is shared
 * by modula-flan and modula-res). */
typedef struct bundle_expert_info {
	char name[MOE_NAME_MAX];
	int rank, rslora, reads_h;
	float alpha;
	unsigned targets;
} bundle_expert_info_t;

/* Write expert `e` of `mo` to `path`. 0, or -1 via err_set(). */
int bundle_save_expert(const moe_t *mo, int e, const char *path);

/* Read an expert file's configuration. 0, or -1 via err_set(). */
int bundle_expert_info(const char *path, bundle_expert_info_t *info);

/* Fill expert `e` of `mo` from `path` (rank, alpha, shapes must match).
 * 0, or -1 via err_set() naming the file and the tensor. */
int bundle_load_expert(moe_t *mo, int e, const char *path);

/* Write the routers of `mo`. 0, or -1 via err_set(). */
int bundle_save_router(const moe_t *mo, const char *path);

/* Fill the router rows of `mo` from `path`, matching rows by expert name:
 * rows the file lacks keep their values (a new domain starts at zero),
 * rows of experts `mo` lacks are refused. 0, or -1 via err_set(). */
int bundle_load_router(moe_t *mo, const char *path);

/* Write the bundle DIR (created): every expert, the router when there is
 * one, and the manifest naming `base` (the model folder). 0 or -1. */
int bundle_write(const moe_t *mo, const char *dir, const char *base);

/* 1 when `path` is a bundle folder (has the manifest), else 0. */
int bundle_is(const char *path);

/* Attach the bundle DIR to `m`: soft routing, nothing trainable. NULL via
 * err_set(). The description must outlive the model's forwards. */
moe_t *bundle_load(model_t *m, const char *dir);

/* A PEFT LoRA folder from expert file `path` (lora_save's files). Res
 * domain experts read the universal expert's output, not the layer's
 * input, so they are refused. 0, or -1 via err_set(). */
int bundle_export_peft(const char *expert, const char *dir);

/* An expert file `path` named `name` from a PEFT LoRA folder, checked
 * against the base model `m` (lora_load's reader). 0, or -1 via err_set(). */
int bundle_import_peft(model_t *m, const char *peft, const char *name, const char *path);

#endif
