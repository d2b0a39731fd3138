/* lib_common.c: unit tests of lib/ (errors, logging, JSON helpers,
 * SHA-256, clocks, safe paths, atomic files), failure paths included. */
#include "tap.h"
#include "err.h"
#include "fsx.h"
#include "jsonu.h"
#include "log.h"
#include "mtime.h"
#include "path.h"
#include "sha256.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_err(void)
{
	TAP_OK(err_set("cannot open '%s'", "x") == -1, "err_set returns -1");
	TAP_OK(!strcmp(err_msg(), "cannot open 'x'"), "err_msg holds the message");
	err_prefix("loading '%s'", "m");
	TAP_OK(!strcmp(err_msg(), "loading 'm': cannot open 'x'"), "err_prefix adds context: %s", err_msg());
	TAP_OK(err_setc(-7, "seven") == -7, "err_setc returns its code");
	err_clear();
	TAP_OK(err_msg()[0] == '\0', "err_clear empties the message");
}

static void test_log(void)
{
	enum log_level l;

	TAP_OK(log_parse_level("warn", &l) == 0 && l == LOG_WARN, "log level 'warn' parses");
	TAP_OK(log_parse_level("loud", &l) < 0 && strstr(err_msg(), "'loud'"), "unknown log level refused: %s", err_msg());
	TAP_OK(log_open("/nonexistent-dir/x.log") < 0, "log_open of an impossible path fails: %s", err_msg());
}

static void test_json(void)
{
	const char *text = "{\"rank\": 8, \"lr\": 0.0002, \"name\": \"q\", \"on\": true, \"frac\": 1.5, \"s\": \"8\"}";
	cJSON *o = jsonu_parse(text, strlen(text), "t");
	long long i;
	double d;
	const char *s;
	int b;
	static const char *const allowed[] = { "rank", "lr", "name", "on", "frac", "s", NULL };
	static const char *const fewer[] = { "rank", NULL };

	TAP_OK(o != NULL, "valid JSON parses");
	TAP_OK(jsonu_req_int(o, "rank", &i) == 0 && i == 8, "required integer read");
	TAP_OK(jsonu_req_int(o, "frac", &i) < 0 && strstr(err_msg(), "expected an integer"), "fraction refused as integer: %s", err_msg());
	TAP_OK(jsonu_req_int(o, "s", &i) < 0 && strstr(err_msg(), "got a string"), "string refused as integer: %s", err_msg());
	TAP_OK(jsonu_req_int(o, "missing", &i) < 0 && strstr(err_msg(), "missing"), "missing required key reported: %s", err_msg());
	TAP_OK(jsonu_opt_int(o, "missing", 5, &i) == 0 && i == 5, "optional integer defaults");
	TAP_OK(jsonu_req_num(o, "lr", &d) == 0 && d == 0.0002, "number read");
	TAP_OK(jsonu_req_str(o, "name", &s) == 0 && !strcmp(s, "q"), "string read");
	TAP_OK(jsonu_opt_bool(o, "on", 0, &b) == 0 && b == 1, "boolean read");
	TAP_OK(jsonu_opt_bool(o, "rank", 0, &b) < 0, "number refused as boolean: %s", err_msg());
	TAP_OK(jsonu_check_keys(o, allowed) == 0, "known keys accepted");
	TAP_OK(jsonu_check_keys(o, fewer) < 0 && strstr(err_msg(), "unknown field 'lr'"), "unknown key refused: %s", err_msg());
	cJSON_Delete(o);
	TAP_OK(jsonu_parse("{\"a\": [1, 2,", 12, "bad.json") == NULL && strstr(err_msg(), "bad.json"), "truncated JSON refused: %s", err_msg());
	TAP_OK(jsonu_read_file("/nonexistent/x.json") == NULL, "missing file refused: %s", err_msg());
}

static void test_sha256(void)
{
	uint8_t d[SHA256_LEN];
	char hex[SHA256_HEX_LEN + 1];
	sha256_t *h = sha256_new();

	sha256_buf("abc", 3, d);
	sha256_hex(d, hex);
	TAP_OK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "sha256('abc') matches FIPS 180-2");
	sha256_update(h, "a", 1);
	sha256_update(h, "bc", 2);
	sha256_final(h, d);
	sha256_hex(d, hex);
	TAP_OK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "incremental sha256 matches one-shot");
	sha256_destroy(&h);
	TAP_OK(h == NULL, "sha256_destroy clears the pointer");
	sha256_destroy(&h);
	TAP_OK(sha256_file("/nonexistent/f", hex) < 0, "sha256_file of a missing file fails: %s", err_msg());
	TAP_OK(sha256_is_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 1, "hex digest recognised");
	TAP_OK(sha256_is_hex("../etc/passwd") == 0, "non-hex refused");
}

static void test_path(void)
{
	char p[64];

	TAP_OK(path_join(p, sizeof p, "/data", "artifacts/ab") == 0 && !strcmp(p, "/data/artifacts/ab"), "safe join");
	TAP_OK(path_join(p, sizeof p, "/data", "../etc/passwd") < 0, "'..' refused: %s", err_msg());
	TAP_OK(path_join(p, sizeof p, "/data", "a/../../b") < 0, "inner '..' refused");
	TAP_OK(path_join(p, sizeof p, "/data", "/etc/passwd") < 0, "absolute refused");
	TAP_OK(path_join(p, sizeof p, "/data", "a//b") < 0, "empty component refused");
	TAP_OK(path_join(p, sizeof p, "/data", "") < 0, "empty path refused");
	TAP_OK(path_join(p, sizeof p, "/data", "a\nb") < 0, "control byte refused");
	TAP_OK(path_join(p, 8, "/data", "abcdefgh") < 0 && strstr(err_msg(), "too long"), "overflow refused: %s", err_msg());
	TAP_OK(path_check_name("model.safetensors") == 0, "plain name accepted");
	TAP_OK(path_check_name("a/b") < 0 && path_check_name("..") < 0, "names with '/' or '..' refused");
}

static void test_fsx(void)
{
	char dir[] = "/tmp/modula-lib-test-XXXXXX";
	char path[256], *buf = NULL;
	size_t len = 0;
	struct stat st;

	TAP_OK(mkdtemp(dir) != NULL, "temporary folder made");
	snprintf(path, sizeof path, "%s/a/b/c", dir);
	TAP_OK(fsx_mkdirs(path, 0755) == 0 && stat(path, &st) == 0 && S_ISDIR(st.st_mode), "mkdirs makes nested folders");
	TAP_OK(fsx_mkdirs(path, 0755) == 0, "mkdirs is idempotent");
	snprintf(path, sizeof path, "%s/state.json", dir);
	TAP_OK(fsx_write_atomic(path, "one", 3) == 0, "atomic write");
	TAP_OK(fsx_write_atomic(path, "second", 6) == 0, "atomic overwrite");
	TAP_OK(fsx_read_all(path, &buf, &len) == 0 && len == 6 && !strcmp(buf, "second"), "read back the new content");
	free(buf);
	snprintf(path, sizeof path, "%s/missing/state.json", dir);
	TAP_OK(fsx_write_atomic(path, "x", 1) < 0 && strstr(err_msg(), "cannot create"), "write into a missing folder fails clearly: %s", err_msg());
	TAP_OK(fsx_read_all(dir, &buf, &len) < 0 && strstr(err_msg(), "folder"), "reading a folder fails clearly: %s", err_msg());
	snprintf(path, sizeof path, "rm -rf '%s'", dir);
	TAP_OK(system(path) == 0, "temporary folder removed");
}

static void test_mtime(void)
{
	uint64_t a = mtime_ns(), b = mtime_ns();

	TAP_OK(b >= a, "monotonic clock does not go back");
	TAP_OK(mtime_wall_ms() > 1700000000000LL, "wall clock is after 2023");
}

int main(void)
{
	test_err();
	test_log();
	test_json();
	test_sha256();
	test_path();
	test_fsx();
	test_mtime();
	return tap_done();
}
