/* engine_main.c: the modula-engine program, a thin front over the engine
 * library (worker/engine_cli.c). */
#include "worker/engine_cli.h"

int main(int argc, char **argv)
{
	return engine_cli_main(argc, argv);
}
