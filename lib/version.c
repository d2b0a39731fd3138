/* version.c: see version.h. */
#include "config.h"
#include "version.h"

void version_print(FILE *f, const char *prog)
{
#ifdef HAVE_CUDA
	const char *cuda = "cpu, cuda";
#else
	const char *cuda = "cpu";
#endif
	fprintf(f, "%s (modula) %s\nbackends: %s\n", prog, PACKAGE_VERSION, cuda);
}
