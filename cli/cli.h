/* cli.h: the modula command line (a thin client of modulad's HTTP API). */
#ifndef MODULA_CLI_H
#define MODULA_CLI_H

/* Run one modula command. Exit status as documented in --help. */
int cli_main(int argc, char **argv);

#endif
