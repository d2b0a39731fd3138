/* jsonu.c: see jsonu.h. */
#include "jsonu.h"
#include "err.h"
#include "fsx.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

cJSON *jsonu_parse(const char *text, size_t len, const char *what)
{
	const char *end = NULL;
	cJSON *root;

	if (!text)
		return err_set("no JSON in '%s'", what), NULL;
	root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (!root) {
		size_t at = end && end >= text ? (size_t)(end - text) : 0;
		if (at > len)
			at = len;
		err_set("bad JSON in '%s' near byte %zu", what, at);
		return NULL;
	}
	while (end && (size_t)(end - text) < len && strchr(" \t\r\n", *end) && *end)
		end++;
	if (end && (size_t)(end - text) < len) {
		cJSON_Delete(root);
		err_set("bad JSON in '%s': unexpected bytes after the value at byte %zu", what, (size_t)(end - text));
		return NULL;
	}
	return root;
}

cJSON *jsonu_read_file(const char *path)
{
	char *buf = NULL;
	size_t len = 0;
	cJSON *root;

	if (fsx_read_all(path, &buf, &len) < 0)
		return NULL;
	root = jsonu_parse(buf, len, path);
	free(buf);
	return root;
}

const char *jsonu_type_name(const cJSON *item)
{
	if (!item)
		return "nothing";
	if (cJSON_IsNull(item))
		return "null";
	if (cJSON_IsBool(item))
		return "a boolean";
	if (cJSON_IsNumber(item))
		return "a number";
	if (cJSON_IsString(item))
		return "a string";
	if (cJSON_IsArray(item))
		return "an array";
	if (cJSON_IsObject(item))
		return "an object";
	return "an invalid value";
}

static const cJSON *s_member(const cJSON *obj, const char *key)
{
	const cJSON *it;

	if (!cJSON_IsObject(obj))
		return NULL;
	it = cJSON_GetObjectItemCaseSensitive(obj, key);
	if (it && cJSON_IsNull(it))
		return NULL;
	return it;
}

static int s_int(const cJSON *it, const char *key, long long *out)
{
	double v;

	if (!cJSON_IsNumber(it))
		return err_set("'%s': expected an integer, got %s", key, jsonu_type_name(it));
	v = it->valuedouble;
	if (!isfinite(v) || v != floor(v) || v < -9.2e18 || v > 9.2e18)
		return err_set("'%s': expected an integer, got %g", key, v);
	*out = (long long)v;
	return 0;
}

int jsonu_req_int(const cJSON *obj, const char *key, long long *out)
{
	const cJSON *it = s_member(obj, key);

	if (!it)
		return err_set("'%s': missing (expected an integer)", key);
	return s_int(it, key, out);
}

int jsonu_opt_int(const cJSON *obj, const char *key, long long def, long long *out)
{
	const cJSON *it = s_member(obj, key);

	if (!it) {
		*out = def;
		return 0;
	}
	return s_int(it, key, out);
}

static int s_num(const cJSON *it, const char *key, double *out)
{
	if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
		return err_set("'%s': expected a number, got %s", key, jsonu_type_name(it));
	*out = it->valuedouble;
	return 0;
}

int jsonu_req_num(const cJSON *obj, const char *key, double *out)
{
	const cJSON *it = s_member(obj, key);

	if (!it)
		return err_set("'%s': missing (expected a number)", key);
	return s_num(it, key, out);
}

int jsonu_opt_num(const cJSON *obj, const char *key, double def, double *out)
{
	const cJSON *it = s_member(obj, key);

	if (!it) {
		*out = def;
		return 0;
	}
	return s_num(it, key, out);
}

int jsonu_opt_bool(const cJSON *obj, const char *key, int def, int *out)
{
	const cJSON *it = s_member(obj, key);

	if (!it) {
		*out = def;
		return 0;
	}
	if (!cJSON_IsBool(it))
		return err_set("'%s': expected a boolean, got %s", key, jsonu_type_name(it));
	*out = cJSON_IsTrue(it);
	return 0;
}

int jsonu_req_str(const cJSON *obj, const char *key, const char **out)
{
	const cJSON *it = s_member(obj, key);

	if (!it)
		return err_set("'%s': missing (expected a string)", key);
	if (!cJSON_IsString(it))
		return err_set("'%s': expected a string, got %s", key, jsonu_type_name(it));
	*out = it->valuestring;
	return 0;
}

int jsonu_opt_str(const cJSON *obj, const char *key, const char *def, const char **out)
{
	const cJSON *it = s_member(obj, key);

	if (!it) {
		*out = def;
		return 0;
	}
	if (!cJSON_IsString(it))
		return err_set("'%s': expected a string, got %s", key, jsonu_type_name(it));
	*out = it->valuestring;
	return 0;
}

int jsonu_check_keys(const cJSON *obj, const char *const *allowed)
{
	const cJSON *it;

	if (!cJSON_IsObject(obj))
		return err_set("expected an object, got %s", jsonu_type_name(obj));
	cJSON_ArrayForEach(it, obj) {
		int ok = 0;
		for (const char *const *a = allowed; *a; a++) {
			if (it->string && strcmp(it->string, *a) == 0) {
				ok = 1;
				break;
			}
		}
		if (!ok)
			return err_set("unknown field '%s'", it->string ? it->string : "");
	}
	return 0;
}

char *jsonu_print(const cJSON *item)
{
	return cJSON_PrintUnformatted(item);
}

int jsonu_write_file(const char *path, const cJSON *item)
{
	char *text = cJSON_Print(item);
	int rc;

	if (!text)
		return err_set("out of memory printing JSON for '%s'", path);
	rc = fsx_write_atomic(path, text, strlen(text));
	free(text);
	return rc;
}
