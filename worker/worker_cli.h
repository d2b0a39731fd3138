/* worker_cli.h: modula-worker's command line as a library function. */
#ifndef MODULA_WORKER_CLI_H
#define MODULA_WORKER_CLI_H

/* Parse arguments and run the worker. Exit status: 0, 1 failure, 2 usage. */
int worker_cli_main(int argc, char **argv);

#endif
