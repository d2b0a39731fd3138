/* engine_cli.h: the modula-engine command line, as a library function so
 * tests can drive it without a process. */
#ifndef MODULA_ENGINE_CLI_H
#define MODULA_ENGINE_CLI_H

/* Run one modula-engine command. Returns the process exit status:
 * 0 success, 1 the work failed, 2 bad usage. Never exits. */
int engine_cli_main(int argc, char **argv);

#endif
