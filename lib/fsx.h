/* fsx.h: file helpers with the durability rules modula relies on.
 *
 * fsx_write_atomic() is the only way state files are written: a temporary
 * file in the same folder, write, fsync, rename over the target, fsync the
 * folder. A reader sees the old file or the new one, never a torn one, and
 * after it returns the new file survives a power cut.
 */
#ifndef MODULA_FSX_H
#define MODULA_FSX_H

#include <stddef.h>

/* 0, or -1 via err_set() (the target is untouched on failure). */
int fsx_write_atomic(const char *path, const void *data, size_t len);

/* Read a whole file into a fresh NUL-terminated buffer (free() it).
 * 0, or -1 via err_set(). */
int fsx_read_all(const char *path, char **out, size_t *len);

/* mkdir -p with `mode`. 0, or -1 via err_set(). */
int fsx_mkdirs(const char *path, unsigned mode);

/* fsync a folder so a rename or create in it is durable. 0 or -1. */
int fsx_fsync_dir(const char *dir);

#endif
