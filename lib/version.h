/* version.h: the --version text every modula program prints. */
#ifndef MODULA_VERSION_H
#define MODULA_VERSION_H

#include <stdio.h>

/* The engine's numerics version, part of every job's content key
 * (docs/specs.md, "Jobs and content keys"). Bump it in the commit that
 * makes the engine give different outputs or figures for the same job
 * (kernels, initialisation, data order, tokenisation, what a job reports):
 * jobs then get new keys, so the queue's cache does not hand out what an
 * older engine made. Not the package version: a release that leaves every
 * result as it was keeps the cache. */
#define MODULA_ENGINE_NUMERICS 2

/* Print "PROG (modula) VERSION" and the build's backends to `f`. */
void version_print(FILE *f, const char *prog);

#endif
