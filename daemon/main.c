/* main.c: the modulad program, a thin front over daemon/daemon_cli.c. */
#include "daemon/daemon_cli.h"

int main(int argc, char **argv)
{
	return daemon_cli_main(argc, argv);
}
