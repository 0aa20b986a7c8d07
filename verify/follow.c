/* follow.c - hashing a file while it is being written: a thread reads back
 * (pread, from the page cache) what the writer says is in the file and
 * hashes it, so the digest of a large output costs no pass of its own. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "verify.h"

struct verify_follower {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int fd;                    /* our own descriptor (a dup): the writer may close its own */
	struct verify_hasher *h;
	uint64_t avail, hashed;    /* bytes written so far / hashed so far (under mu) */
	int done, stop;            /* the writer wrote everything / give up (under mu) */
	enum hm_err err;
	struct hm_ctx ctx;         /* the thread's own, for its error message */
};

static void *follow_main(void *arg)
{
	struct verify_follower *f = arg;
	pthread_mutex_lock(&f->mu);
	for (;;) {
		while (!f->stop && f->hashed == f->avail && !f->done)
			pthread_cond_wait(&f->cv, &f->mu);
		if (f->stop || f->hashed == f->avail)
			break;
		uint64_t from = f->hashed, n = f->avail - f->hashed;
		pthread_mutex_unlock(&f->mu);
		enum hm_err e = verify_hash_range(&f->ctx, f->fd, f->h, from, n);
		pthread_mutex_lock(&f->mu);
		if (e) {
			f->err = e;
			break;
		}
		f->hashed += n;
	}
	f->done = 1;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

struct verify_follower *verify_follower_start(int fd)
{
	struct verify_follower *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->fd = dup(fd);
	f->h = verify_hasher_new(-1);
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	if (f->fd < 0 || !f->h || pthread_create(&f->th, NULL, follow_main, f)) {
		if (f->fd >= 0)
			close(f->fd);
		verify_hasher_free(f->h);
		pthread_mutex_destroy(&f->mu);
		pthread_cond_destroy(&f->cv);
		free(f);
		return NULL;
	}
	return f;
}

void verify_follower_advance(struct verify_follower *f, uint64_t written)
{
	pthread_mutex_lock(&f->mu);
	if (written > f->avail) {
		f->avail = written;
		pthread_cond_signal(&f->cv);
	}
	pthread_mutex_unlock(&f->mu);
}

/* After the join. */
static void release(struct verify_follower *f)
{
	close(f->fd);
	verify_hasher_free(f->h);
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cv);
	free(f);
}

enum hm_err verify_follower_finish(struct hm_ctx *ctx, struct verify_follower *f, uint64_t size, char sha256[65])
{
	enum hm_err err;
	pthread_mutex_lock(&f->mu);
	if (size > f->avail)
		f->avail = size;
	f->done = 1;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	pthread_join(f->th, NULL);
	err = f->err; /* joined: no lock needed from here */
	if (err)
		hm_fail(ctx, err, "%s", f->ctx.errmsg);
	else if (f->hashed != size)
		err = hm_fail(ctx, HM_ERR_CORRUPT, "hashed %llu bytes of a %llu-byte file",
			      (unsigned long long)f->hashed, (unsigned long long)size);
	else
		verify_hasher_final(f->h, sha256, NULL);
	release(f);
	return err;
}

void verify_follower_abort(struct verify_follower *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	f->stop = 1;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	pthread_join(f->th, NULL);
	release(f);
}
