/* main.c: the modula command, a thin front over cli/cli.c. */
#include "cli/cli.h"

int main(int argc, char **argv)
{
	return cli_main(argc, argv);
}
