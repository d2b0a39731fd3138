/* sha256.c: see sha256.h. */
#include "sha256.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sha256 {
	EVP_MD_CTX *ctx;
};

sha256_t *sha256_new(void)
{
	sha256_t *h = calloc(1, sizeof *h);

	if (!h)
		return err_set("out of memory"), NULL;
	h->ctx = EVP_MD_CTX_new();
	if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
		sha256_destroy(&h);
		return err_set("cannot start a SHA-256 digest (OpenSSL)"), NULL;
	}
	return h;
}

int sha256_update(sha256_t *h, const void *data, size_t len)
{
	if (EVP_DigestUpdate(h->ctx, data, len) != 1)
		return err_set("SHA-256 update failed (OpenSSL)");
	return 0;
}

int sha256_final(sha256_t *h, uint8_t out[SHA256_LEN])
{
	unsigned int n = 0;

	if (EVP_DigestFinal_ex(h->ctx, out, &n) != 1 || n != SHA256_LEN)
		return err_set("SHA-256 final failed (OpenSSL)");
	if (EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
		return err_set("SHA-256 reset failed (OpenSSL)");
	return 0;
}

void sha256_destroy(sha256_t **h)
{
	if (!h || !*h)
		return;
	EVP_MD_CTX_free((*h)->ctx);
	free(*h);
	*h = NULL;
}

int sha256_buf(const void *data, size_t len, uint8_t out[SHA256_LEN])
{
	unsigned int n = 0;

	if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != SHA256_LEN)
		return err_set("SHA-256 digest failed (OpenSSL)");
	return 0;
}

void sha256_hex(const uint8_t d[SHA256_LEN], char hex[SHA256_HEX_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 0; i < SHA256_LEN; i++) {
		hex[2 * i] = digits[d[i] >> 4];
		hex[2 * i + 1] = digits[d[i] & 15];
	}
	hex[SHA256_HEX_LEN] = '\0';
}

int sha256_file(const char *path, char hex[SHA256_HEX_LEN + 1])
{
	uint8_t buf[1 << 16];
	uint8_t d[SHA256_LEN];
	sha256_t *h = NULL;
	int fd, rc = -1;
	ssize_t n;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set("cannot open '%s': %s", path, strerror(errno));
	h = sha256_new();
	if (!h)
		goto out;
	for (;;) {
		n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err_set("cannot read '%s': %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		if (sha256_update(h, buf, (size_t)n) < 0)
			goto out;
	}
	if (sha256_final(h, d) < 0)
		goto out;
	sha256_hex(d, hex);
	rc = 0;
out:
	sha256_destroy(&h);
	close(fd);
	return rc;
}

int sha256_is_hex(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	}
	return i == SHA256_HEX_LEN;
}
