/* cmd_data.h: `modula-engine data JOB.json`, the embedded suite and corpus
 * as an engine job (see cmd_data.c). Not the generators (suite.h, corpus.h). */
#ifndef MODULA_CMD_DATA_H
#define MODULA_CMD_DATA_H

/* argv[0] is "data". Returns the exit status: 0, 1 failed, 2 bad usage. */
int cmd_data(int argc, char **argv);

#endif
