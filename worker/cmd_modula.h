/* cmd_modula.h: modula-engine's MoDULA commands (docs/modula.md). Each
 * takes argv with argv[0] the command's name and returns the exit status:
 * 0 done, 1 failed (message printed), 2 bad usage. */
#ifndef MODULA_CMD_MODULA_H
#define MODULA_CMD_MODULA_H

/* stage JOB.json: one training stage, JSON lines out (stage.h). */
int cmd_stage(int argc, char **argv);
/* eval JOB.json: loss, accuracy, perplexity, router means (eval.h). */
int cmd_eval(int argc, char **argv);
/* export --expert FILE --out DIR: an expert as a PEFT LoRA folder. */
int cmd_export(int argc, char **argv);
/* import --model DIR --peft DIR --out FILE [--name N]: a PEFT LoRA as an expert. */
int cmd_import(int argc, char **argv);

#endif
