/* jsonu.h: small helpers over cJSON for reading untrusted JSON.
 *
 * Every getter checks the type and reports through err_set() with the key
 * quoted ("'rank': expected an integer, got a string"); callers put the
 * surrounding path in front with err_prefix(). Integers are exact: a number
 * with a fraction or outside int64 is refused. Not a schema language.
 */
#ifndef MODULA_JSONU_H
#define MODULA_JSONU_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* Parse `len` bytes of JSON. `what` names the source in the message
 * ("bad JSON in 'job.json' near byte 12"). Returns a tree the caller frees
 * with cJSON_Delete(), or NULL via err_set(). */
cJSON *jsonu_parse(const char *text, size_t len, const char *what);

/* Read and parse a whole file. NULL via err_set() on I/O or syntax errors. */
cJSON *jsonu_read_file(const char *path);

/* Required / optional typed members. Optional getters leave `*out` = `def`
 * when the key is absent or null. Return 0, or -1 via err_set(). */
int jsonu_req_int(const cJSON *obj, const char *key, long long *out);
int jsonu_opt_int(const cJSON *obj, const char *key, long long def, long long *out);
int jsonu_req_num(const cJSON *obj, const char *key, double *out);
int jsonu_opt_num(const cJSON *obj, const char *key, double def, double *out);
int jsonu_opt_bool(const cJSON *obj, const char *key, int def, int *out);
/* The string stays owned by `obj`. */
int jsonu_req_str(const cJSON *obj, const char *key, const char **out);
int jsonu_opt_str(const cJSON *obj, const char *key, const char *def, const char **out);

/* Refuse members whose names are not in the NULL-terminated `allowed`:
 * -1 via err_set("unknown field 'x'") for the first one found. */
int jsonu_check_keys(const cJSON *obj, const char *const *allowed);

/* Type name for messages: "a string", "an integer", "null", ... */
const char *jsonu_type_name(const cJSON *item);

/* Compact text of `item`; free() it. NULL on out-of-memory. */
char *jsonu_print(const cJSON *item);

/* Write `item` to `path` atomically (see fsx_write_atomic). 0 or -1. */
int jsonu_write_file(const char *path, const cJSON *item);

#endif
