/* cmd_tokenize.h: `modula-engine tokenize`, see cmd_tokenize.c. */
#ifndef MODULA_CMD_TOKENIZE_H
#define MODULA_CMD_TOKENIZE_H

/* argv[0] is "tokenize". Returns the exit status (0, 1 when a line or the
 * tokenizer was bad, 2 for bad usage). */
int cmd_tokenize(int argc, char **argv);

#endif
