/* fsx.c: see fsx.h. */
#include "fsx.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int s_dirname(const char *path, char *dir, size_t n)
{
	const char *slash = strrchr(path, '/');
	size_t len;

	if (!slash) {
		snprintf(dir, n, ".");
		return 0;
	}
	len = slash == path ? 1 : (size_t)(slash - path);
	if (len >= n)
		return err_set("path too long: '%s'", path);
	memcpy(dir, path, len);
	dir[len] = '\0';
	return 0;
}

int fsx_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		return err_set("cannot open folder '%s': %s", dir, strerror(errno));
	if (fsync(fd) < 0 && errno != EINVAL) {
		int e = errno;
		close(fd);
		return err_set("cannot sync folder '%s': %s", dir, strerror(e));
	}
	close(fd);
	return 0;
}

int fsx_write_atomic(const char *path, const void *data, size_t len)
{
	char tmp[PATH_MAX];
	char dir[PATH_MAX];
	const char *p = data;
	int fd, k;

	k = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	if (k < 0 || (size_t)k >= sizeof tmp)
		return err_set("path too long: '%s'", path);
	if (s_dirname(path, dir, sizeof dir) < 0)
		return -1;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return err_set("cannot create '%s': %s", tmp, strerror(errno));
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			err_set("cannot write '%s': %s", tmp, strerror(errno));
			goto fail;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) < 0) {
		err_set("cannot sync '%s': %s", tmp, strerror(errno));
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		err_set("cannot close '%s': %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		err_set("cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
		goto fail;
	}
	return fsx_fsync_dir(dir);
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return -1;
}

int fsx_read_all(const char *path, char **out, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	size_t cap, n = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set("cannot open '%s': %s", path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		close(fd);
		return err_set("cannot stat '%s': %s", path, strerror(errno));
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		return err_set("cannot read '%s': it is a folder", path);
	}
	cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096;
	buf = malloc(cap);
	if (!buf) {
		close(fd);
		return err_set("out of memory reading '%s'", path);
	}
	for (;;) {
		ssize_t k;
		if (n + 1 >= cap) {
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				close(fd);
				return err_set("out of memory reading '%s'", path);
			}
			buf = nb;
			cap *= 2;
		}
		k = read(fd, buf + n, cap - n - 1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int e = errno;
			free(buf);
			close(fd);
			return err_set("cannot read '%s': %s", path, strerror(e));
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	buf[n] = '\0';
	*out = buf;
	if (len)
		*len = n;
	return 0;
}

int fsx_mkdirs(const char *path, unsigned mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof buf)
		return err_set("bad folder path '%s'", path);
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return err_set("cannot create folder '%s': %s", buf, strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return err_set("cannot create folder '%s': %s", buf, strerror(errno));
	return 0;
}
