/* version.h: the --version text every modula program prints. */
#ifndef MODULA_VERSION_H
#define MODULA_VERSION_H

#include <stdio.h>

/* Print "PROG (modula) VERSION" and the build's backends to `f`. */
void version_print(FILE *f, const char *prog);

#endif
