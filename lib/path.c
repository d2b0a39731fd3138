/* path.c: see path.h. */
#include "path.h"
#include "err.h"

#include <stdio.h>
#include <string.h>

static int s_check_component(const char *s, size_t len, const char *whole)
{
	if (len == 0)
		return err_set("unsafe path '%s': empty component", whole);
	if (len > 255)
		return err_set("unsafe path '%s': component longer than 255 bytes", whole);
	if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
		return err_set("unsafe path '%s': '.' and '..' are not allowed", whole);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f || c == '\\')
			return err_set("unsafe path '%s': control byte or backslash", whole);
	}
	return 0;
}

int path_check_name(const char *name)
{
	if (strchr(name, '/'))
		return err_set("unsafe name '%s': '/' is not allowed", name);
	return s_check_component(name, strlen(name), name);
}

int path_join(char *dst, size_t n, const char *base, const char *rel)
{
	const char *p = rel;
	int k;

	if (rel[0] == '/')
		return err_set("unsafe path '%s': absolute paths are not allowed", rel);
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (s_check_component(p, len, rel) < 0)
			return -1;
		p += len;
		if (*p == '/') {
			p++;
			if (!*p)
				return err_set("unsafe path '%s': trailing '/'", rel);
		}
	}
	if (!rel[0])
		return err_set("unsafe path '': empty");
	k = snprintf(dst, n, "%s/%s", base, rel);
	if (k < 0 || (size_t)k >= n)
		return err_set("path too long: '%s/%s'", base, rel);
	return 0;
}
