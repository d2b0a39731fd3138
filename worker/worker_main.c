/* worker_main.c: the modula-worker program, a thin front over
 * worker/worker_cli.c. */
#include "worker/worker_cli.h"

int main(int argc, char **argv)
{
	return worker_cli_main(argc, argv);
}
