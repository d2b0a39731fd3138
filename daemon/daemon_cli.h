/* daemon_cli.h: modulad's command line as a library function. */
#ifndef MODULA_DAEMON_CLI_H
#define MODULA_DAEMON_CLI_H

/* Parse arguments and run the daemon in the foreground until SIGINT or
 * SIGTERM. Exit status: 0, 1 failure, 2 usage. */
int daemon_cli_main(int argc, char **argv);

#endif
