/* path.h: safe path joining for names that come from outside.
 *
 * path_join() never lets `rel` escape `base`: absolute paths, ".."
 * components, empty components, backslashes and control bytes are refused.
 * It does not resolve symbolic links; stores that must not follow links
 * open with O_NOFOLLOW themselves.
 */
#ifndef MODULA_PATH_H
#define MODULA_PATH_H

#include <stddef.h>

/* Write "base/rel" into dst (size n). 0, or -1 via err_set() when `rel`
 * is unsafe or the result does not fit. */
int path_join(char *dst, size_t n, const char *base, const char *rel);

/* 0 when `name` is one safe path component (no '/', not "." or "..",
 * no control bytes, at most 255 bytes), else -1 via err_set(). */
int path_check_name(const char *name);

#endif
