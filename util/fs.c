/* fs.c - filesystem helpers: mkdir -p, durable atomic writes, bounded reads. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "util.h"

int util_mkdir_p(const char *path, mode_t mode)
{
	char *p;
	int ret = -1;
	if (!*path) {
		errno = ENOENT;
		return -1;
	}
	p = util_strdup(path);
	if (!p) {
		errno = ENOMEM;
		return -1;
	}
	for (char *s = p + 1;; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;
			*s = '\0';
			if (mkdir(p, mode) < 0 && errno != EEXIST)
				goto out;
			*s = c;
			if (!c)
				break;
		}
	}
	/* EEXIST also covers a file where a directory should be; say so. */
	struct stat sb;
	if (stat(p, &sb) < 0)
		goto out;
	if (!S_ISDIR(sb.st_mode)) {
		errno = ENOTDIR;
		goto out;
	}
	ret = 0;
out:
	{
		int e = errno;
		free(p);
		errno = e;
	}
	return ret;
}

int util_mkdir_parents(const char *path, mode_t mode)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int r, e;
	if (!slash || slash == path)
		return 0;
	dir = util_strndup(path, (size_t)(slash - path));
	if (!dir) {
		errno = ENOMEM;
		return -1;
	}
	r = util_mkdir_p(dir, mode);
	e = errno;
	free(dir);
	errno = e;
	return r;
}

int util_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r, e;
	if (fd < 0)
		return -1;
	r = fsync(fd);
	e = errno;
	close(fd);
	errno = e;
	return r;
}

static int write_all(int fd, const void *data, size_t n)
{
	const char *p = data;
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int util_write_file_atomic(const char *path, const void *data, size_t n)
{
	char *tmp = NULL, *dir = NULL;
	const char *slash;
	int fd = -1, ret = -1, e;

	tmp = util_asprintf("%s.tmp-XXXXXX", path);
	slash = strrchr(path, '/');
	dir = slash ? util_strndup(path, slash == path ? 1 : (size_t)(slash - path)) : util_strdup(".");
	if (!tmp || !dir) {
		errno = ENOMEM;
		goto out;
	}
	fd = mkstemp(tmp);
	if (fd < 0)
		goto out;
	if (fchmod(fd, 0644) < 0 || write_all(fd, data, n) < 0 || fsync(fd) < 0)
		goto out_unlink;
	if (close(fd) < 0) {
		fd = -1;
		goto out_unlink;
	}
	fd = -1;
	if (rename(tmp, path) < 0)
		goto out_unlink;
	if (util_fsync_dir(dir) < 0)
		goto out;
	ret = 0;
	goto out;
out_unlink:
	e = errno;
	unlink(tmp);
	errno = e;
out:
	e = errno;
	if (fd >= 0)
		close(fd);
	free(tmp);
	free(dir);
	errno = e;
	return ret;
}

int util_read_file(const char *path, size_t max, char **out, size_t *len)
{
	int fd = -1, ret = -1, e;
	struct util_buf b = UTIL_BUF_INIT;
	char chunk[65536];

	*out = NULL;
	if (len)
		*len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	for (;;) {
		ssize_t r = read(fd, chunk, sizeof(chunk));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			goto out;
		}
		if (r == 0)
			break;
		if ((size_t)r > max - b.len) {
			errno = EFBIG;
			goto out;
		}
		if (util_buf_add(&b, chunk, (size_t)r) < 0) {
			errno = ENOMEM;
			goto out;
		}
	}
	if (len)
		*len = b.len;
	*out = util_buf_detach(&b);
	if (!*out) {
		errno = ENOMEM;
		goto out;
	}
	ret = 0;
out:
	e = errno;
	util_buf_release(&b);
	close(fd);
	errno = e;
	return ret;
}
