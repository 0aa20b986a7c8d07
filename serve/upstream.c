/* upstream.c - pull-through: what the store lacks is fetched from the
 * upstream hub through the fetch layer (verified, into the store) and served
 * while it arrives. One upstream download per file however many clients
 * ask; they all read the part file up to its contiguous written prefix, then
 * the blob. Listings are cached (commits forever, branch names briefly). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include "serve-int.h"
#include "../mirror/mirror.h"
#include "../store/index.h"
#include "../store/torrents.h"

#define REF_TTL 30.0        /* seconds a branch -> commit answer is reused */
#define MAX_TREES 32
#define READ_WAIT_S 0.5
#define FIRST_BYTE_WAIT_S 30.0 /* the status line waits this long for the first body byte */

struct ref_cache {
	char key[512];
	char commit[41];
	double at;
	struct ref_cache *next;
};

struct tree_cache {
	char key[512];
	struct fetch_entry *e;
	size_t n;
	int refs;
	double used;
	struct tree_cache *next;
};

struct inflight {
	char key[80];
	char part[4096];
	char blob[4096];         /* set when done */
	uint64_t avail;          /* [0, avail) of the part file is written */
	int gen;                 /* bumped when the download starts over */
	int done;
	enum hm_err err;
	char errmsg[512];        /* why it failed (set with done) */
	int refs;
	/* for the activity page (srv_up_progress) */
	char type[16], repo[200], path[512];
	uint64_t size;
	int64_t started;
	struct inflight *next;
};

struct srv_upstream {
	struct fetch_client *fc;
	pthread_mutex_t mu;
	pthread_cond_t cv;       /* inflight progress */
	struct ref_cache *refs;
	struct tree_cache *trees;
	struct inflight *inflight;
	int threads;             /* download threads running */
	int stopping;
	uint64_t bytes_total;    /* over the wire from the upstream by pull-throughs (/metrics) */
	uint64_t errors_total;   /* pull-throughs that failed */
	volatile sig_atomic_t cancel; /* stops the downloads: only at the very end */
};

void srv_up_totals(struct srv *s, uint64_t *bytes, uint64_t *errors, int *running)
{
	struct srv_upstream *u = s->up;
	*bytes = *errors = 0;
	*running = 0;
	if (!u)
		return;
	pthread_mutex_lock(&u->mu);
	*bytes = u->bytes_total;
	*errors = u->errors_total;
	for (struct inflight *x = u->inflight; x; x = x->next)
		*running += !x->done;
	pthread_mutex_unlock(&u->mu);
}

int srv_up_enabled(const struct srv *s)
{
	return s->up && s->up->fc && !s->o->offline;
}

enum hm_err srv_up_init(struct srv *s)
{
	struct srv_upstream *u = calloc(1, sizeof(*u));
	if (!u)
		return hm_fail(s->ctx, HM_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&u->mu, NULL);
	pthread_cond_init(&u->cv, NULL);
	s->up = u;
	if (s->o->upstream && !s->o->offline)
		return fetch_client_new(s->ctx, s->o->upstream, &u->fc);
	return HM_OK;
}

void srv_up_stop(struct srv *s)
{
	if (s->up)
		s->up->cancel = 1;
}

void srv_up_free(struct srv *s)
{
	struct srv_upstream *u = s->up;
	if (!u)
		return;
	u->cancel = 1;
	/* let running downloads finish writing what they have (they stop on cancel) */
	pthread_mutex_lock(&u->mu);
	u->stopping = 1;
	pthread_cond_broadcast(&u->cv);
	while (u->threads)
		pthread_cond_wait(&u->cv, &u->mu);
	pthread_mutex_unlock(&u->mu);
	for (struct ref_cache *r = u->refs, *n; r; r = n) {
		n = r->next;
		free(r);
	}
	for (struct tree_cache *t = u->trees, *n; t; t = n) {
		n = t->next;
		fetch_entries_free(t->e, t->n);
		free(t);
	}
	for (struct inflight *f = u->inflight, *n; f; f = n) {
		n = f->next;
		free(f);
	}
	fetch_client_free(u->fc);
	pthread_mutex_destroy(&u->mu);
	pthread_cond_destroy(&u->cv);
	free(u);
	s->up = NULL;
}

/* The client to use for this request: the server's, or (with
 * --forward-token and a client token) one carrying the client's token. */
static struct fetch_client *client_for(struct srv *s, struct srv_req *q, int *owned)
{
	*owned = 0;
	if (s->o->forward_token && q && q->client_token) {
		struct fetch_client_opts o = *s->o->upstream;
		struct fetch_client *fc = NULL;
		struct hm_ctx quiet = {0};
		o.token = q->client_token;
		if (!fetch_client_new(&quiet, &o, &fc)) {
			*owned = 1;
			return fc;
		}
	}
	return s->up->fc;
}

static void drop_unused_trees(struct srv_upstream *u)
{
	size_t n = 0;
	for (struct tree_cache *t = u->trees; t; t = t->next)
		n++;
	while (n > MAX_TREES) {
		struct tree_cache **victim = NULL;
		for (struct tree_cache **pp = &u->trees; *pp; pp = &(*pp)->next)
			if (!(*pp)->refs && (!victim || (*pp)->used < (*victim)->used))
				victim = pp;
		if (!victim)
			return;
		struct tree_cache *t = *victim;
		*victim = t->next;
		fetch_entries_free(t->e, t->n);
		free(t);
		n--;
	}
}

enum hm_err srv_up_rev(struct srv *s, struct srv_req *q, const char *type, const char *repo, const char *rev,
		       char commit[41], const struct fetch_entry **fe, size_t *n, void **hold)
{
	struct srv_upstream *u = s->up;
	struct hm_ctx ctx = {0};
	char key[512];
	enum hm_err err = HM_OK;
	int owned;
	struct fetch_client *fc;

	*fe = NULL;
	*n = 0;
	*hold = NULL;
	if (!srv_up_enabled(s))
		return HM_ERR_REV_NOT_FOUND;
	fc = client_for(s, q, &owned);
	/* 1. revision -> commit */
	if (util_is_hex(rev, 40)) {
		memcpy(commit, rev, 41);
	} else {
		int found = 0;
		snprintf(key, sizeof(key), "%s:%s@%s", type, repo, rev);
		pthread_mutex_lock(&u->mu);
		for (struct ref_cache *r = u->refs; r; r = r->next)
			if (!strcmp(r->key, key) && util_now() - r->at < REF_TTL) {
				memcpy(commit, r->commit, 41);
				found = 1;
			}
		pthread_mutex_unlock(&u->mu);
		if (!found) {
			err = fetch_hub_revision(&ctx, fc, type, repo, rev, commit);
			if (err)
				goto out;
			struct ref_cache *r = calloc(1, sizeof(*r));
			if (r) {
				snprintf(r->key, sizeof(r->key), "%s", key);
				memcpy(r->commit, commit, 41);
				r->at = util_now();
				pthread_mutex_lock(&u->mu);
				/* replace an older answer for the same name */
				for (struct ref_cache **pp = &u->refs; *pp; pp = &(*pp)->next)
					if (!strcmp((*pp)->key, key)) {
						struct ref_cache *old = *pp;
						*pp = old->next;
						free(old);
						break;
					}
				r->next = u->refs;
				u->refs = r;
				pthread_mutex_unlock(&u->mu);
			}
		}
	}
	/* 2. the listing of the commit (immutable) */
	snprintf(key, sizeof(key), "%s:%s@%s", type, repo, commit);
	pthread_mutex_lock(&u->mu);
	for (struct tree_cache *t = u->trees; t; t = t->next)
		if (!strcmp(t->key, key)) {
			t->refs++;
			t->used = util_now();
			*fe = t->e;
			*n = t->n;
			*hold = t;
		}
	pthread_mutex_unlock(&u->mu);
	if (!*hold) {
		struct fetch_entry *e = NULL;
		size_t ne = 0;
		err = fetch_hub_tree(&ctx, fc, type, repo, commit, &e, &ne);
		if (err)
			goto out;
		struct tree_cache *t = calloc(1, sizeof(*t));
		if (!t) {
			fetch_entries_free(e, ne);
			err = HM_ERR_NOMEM;
			goto out;
		}
		snprintf(t->key, sizeof(t->key), "%s", key);
		t->e = e;
		t->n = ne;
		t->refs = 1;
		t->used = util_now();
		pthread_mutex_lock(&u->mu);
		t->next = u->trees;
		u->trees = t;
		drop_unused_trees(u);
		pthread_mutex_unlock(&u->mu);
		*fe = e;
		*n = ne;
		*hold = t;
	}
out:
	if (owned)
		fetch_client_free(fc);
	return err;
}

void srv_up_release(struct srv *s, void *hold)
{
	struct tree_cache *t = hold;
	if (!t || !s->up)
		return;
	pthread_mutex_lock(&s->up->mu);
	t->refs--;
	pthread_mutex_unlock(&s->up->mu);
}

/* ---- one pulled-through file ---- */

struct dl_job {
	struct srv *s;
	struct inflight *f;
	char type[16], repo[200], commit[41], ref[256];
	char *path;
	struct fetch_entry *all;
	size_t nall;
	struct fetch_client *fc;
	int fc_owned;
};

static void on_progress(void *ud, const char *path, uint64_t contiguous)
{
	struct dl_job *j = ud;
	struct srv_upstream *u = j->s->up;
	(void)path;
	pthread_mutex_lock(&u->mu);
	if (contiguous < j->f->avail)
		j->f->gen++; /* started over: readers past this point must give up */
	j->f->avail = contiguous;
	pthread_cond_broadcast(&u->cv);
	pthread_mutex_unlock(&u->mu);
}

/* Once every file of the commit is in the store, record the revision, so
 * the mirror answers it from the index from now on (and offline). */
static void record_if_complete(struct hm_ctx *ctx, struct store *st, struct dl_job *j)
{
	struct store_file *sf = calloc(j->nall ? j->nall : 1, sizeof(*sf));
	size_t i;
	if (!sf)
		return;
	for (i = 0; i < j->nall; i++) {
		const struct fetch_entry *e = &j->all[i];
		int yes = 0;
		uint64_t size;
		int found;
		sf[i].path = e->path;
		sf[i].size = e->size;
		sf[i].lfs = e->lfs;
		memcpy(sf[i].git_oid, e->oid, 41);
		if (e->lfs) {
			memcpy(sf[i].sha256, e->sha256, 65);
			if (store_blob_has(ctx, st, e->sha256, e->size, &yes) || !yes)
				break;
		} else if (store_blob_by_git_oid(ctx, st, e->oid, sf[i].sha256, &size, &found) || !found ||
			   size != e->size || store_blob_has(ctx, st, sf[i].sha256, size, &yes) || !yes) {
			break;
		}
	}
	if (i == j->nall && store_record_revision(ctx, st, j->type, j->repo, j->commit, j->ref[0] ? j->ref : NULL, sf,
						  j->nall) == HM_OK) {
		/* fetched with a token: the copy is not for everyone, also after
		 * a restart without it (serve --p2p keeps it out of the swarm) */
		struct hm_ctx q = {0};
		if (j->s->o->upstream && j->s->o->upstream->token &&
		    store_repo_set_needs_token(&q, st, j->type, j->repo, 1)) {
			/* the next pull with a token marks it again */
		}
	}
	free(sf);
}

static void *download_main(void *arg)
{
	struct dl_job *j = arg;
	struct srv *s = j->s;
	struct srv_upstream *u = s->up;
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct mirror_pull_result res;
	const char *only[1] = {j->path};
	enum hm_err err;

	memset(&res, 0, sizeof(res));
	ctx.cancel = &u->cancel;
	err = store_open(&ctx, s->o->store_dir, &st);
	if (!err) {
		struct mirror_pull_opts o = {
			.type = j->type, .repo = j->repo, .revision = j->commit, .only = only, .nonly = 1,
			.commit = j->commit, .entries = j->all, .nentries = j->nall,
			.on_progress = on_progress, .progress_ud = j, .swarm = s->swarm,
		};
		err = mirror_pull(&ctx, st, j->fc, &o, &res);
	}
	pthread_mutex_lock(&u->mu);
	if (!err && res.nfiles == 1 && res.files[0].sha256[0])
		store_blob_path(st, res.files[0].sha256, j->f->blob, sizeof(j->f->blob));
	else if (!err)
		err = HM_ERR_NOT_FOUND;
	j->f->err = err;
	u->bytes_total += res.bytes_downloaded;
	u->errors_total += err != HM_OK;
	if (err)
		snprintf(j->f->errmsg, sizeof(j->f->errmsg), "%.500s", ctx.errmsg[0] ? ctx.errmsg : hm_strerror(err));
	j->f->done = 1;
	pthread_cond_broadcast(&u->cv);
	pthread_mutex_unlock(&u->mu);
	if (err && s->o->access_log)
		fprintf(s->o->access_log, "hubmirror: pull-through of %s/%s failed: %s\n", j->repo, j->path,
			ctx.errmsg[0] ? ctx.errmsg : hm_strerror(err));
	if (!err) {
		if (!j->ref[0]) {
			/* a client that asked by commit: name it after the branch that led here */
			char prefix[300];
			size_t pl = (size_t)snprintf(prefix, sizeof(prefix), "%s:%s@", j->type, j->repo);
			pthread_mutex_lock(&u->mu);
			for (struct ref_cache *r = u->refs; r; r = r->next)
				if (!strncmp(r->key, prefix, pl) && !strcmp(r->commit, j->commit))
					snprintf(j->ref, sizeof(j->ref), "%s", r->key + pl);
			pthread_mutex_unlock(&u->mu);
		}
		record_if_complete(&ctx, st, j);
	}
	mirror_pull_result_release(&res);
	store_close(st);
	/* the inflight entry goes once every reader let go of it */
	pthread_mutex_lock(&u->mu);
	for (struct inflight **pp = &u->inflight; *pp; pp = &(*pp)->next)
		if (*pp == j->f) {
			*pp = j->f->next; /* unlisted: new requests find the blob in the store */
			break;
		}
	if (--j->f->refs == 0)
		free(j->f);
	u->threads--;
	pthread_cond_broadcast(&u->cv);
	pthread_mutex_unlock(&u->mu);
	if (j->fc_owned)
		fetch_client_free(j->fc);
	fetch_entries_free(j->all, j->nall);
	free(j->path);
	free(j);
	return NULL;
}

/* Finds or starts the download of e. Returns a referenced inflight. */
static struct inflight *start_download(struct srv *s, struct srv_req *q, const char *type, const char *repo,
				       const char *commit, const struct fetch_entry *e, const struct fetch_entry *all,
				       size_t nall, const char *ref)
{
	struct srv_upstream *u = s->up;
	char key[80];
	struct inflight *f;
	struct dl_job *j = NULL;
	pthread_t th;
	pthread_attr_t attr;

	if (e->lfs)
		snprintf(key, sizeof(key), "%s", e->sha256);
	else
		snprintf(key, sizeof(key), "git-%s", e->oid);
	pthread_mutex_lock(&u->mu);
	for (f = u->inflight; f; f = f->next)
		if (!strcmp(f->key, key)) {
			f->refs++;
			pthread_mutex_unlock(&u->mu);
			return f;
		}
	if (u->stopping) {
		pthread_mutex_unlock(&u->mu);
		return NULL;
	}
	f = calloc(1, sizeof(*f));
	j = calloc(1, sizeof(*j));
	if (!f || !j)
		goto fail;
	memcpy(f->key, key, sizeof(key));
	snprintf(f->type, sizeof(f->type), "%s", type);
	snprintf(f->repo, sizeof(f->repo), "%s", repo);
	snprintf(f->path, sizeof(f->path), "%s", e->path);
	f->size = e->size;
	f->started = util_unix_time();
	{
		struct store *st = srv_store_take(s);
		if (!st)
			goto fail;
		char state[4096];
		store_part_paths(st, key, f->part, state, sizeof(f->part));
		srv_store_put(s, st);
	}
	f->refs = 2; /* the caller and the download thread */
	j->s = s;
	j->f = f;
	snprintf(j->type, sizeof(j->type), "%s", type);
	snprintf(j->repo, sizeof(j->repo), "%s", repo);
	memcpy(j->commit, commit, 41);
	snprintf(j->ref, sizeof(j->ref), "%s", ref ? ref : "");
	j->path = util_strdup(e->path);
	j->all = calloc(nall ? nall : 1, sizeof(*j->all));
	if (!j->path || !j->all)
		goto fail;
	for (; j->nall < nall; j->nall++) {
		j->all[j->nall] = all[j->nall];
		j->all[j->nall].path = util_strdup(all[j->nall].path);
		if (!j->all[j->nall].path)
			goto fail;
	}
	j->fc = client_for(s, q, &j->fc_owned);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&th, &attr, download_main, j)) {
		pthread_attr_destroy(&attr);
		if (j->fc_owned)
			fetch_client_free(j->fc);
		goto fail;
	}
	pthread_attr_destroy(&attr);
	u->threads++;
	f->next = u->inflight;
	u->inflight = f;
	pthread_mutex_unlock(&u->mu);
	return f;
fail:
	pthread_mutex_unlock(&u->mu);
	if (j) {
		fetch_entries_free(j->all, j->nall);
		free(j->path);
		free(j);
	}
	free(f);
	return NULL;
}

size_t srv_up_progress(struct srv *s, struct srv_up_progress *out, size_t max)
{
	struct srv_upstream *u = s->up;
	size_t n = 0;
	if (!u)
		return 0;
	pthread_mutex_lock(&u->mu);
	for (struct inflight *f = u->inflight; f && n < max; f = f->next, n++) {
		memcpy(out[n].type, f->type, sizeof(out[n].type));
		memcpy(out[n].repo, f->repo, sizeof(out[n].repo));
		memcpy(out[n].path, f->path, sizeof(out[n].path));
		out[n].size = f->size;
		out[n].done = f->avail;
		out[n].started = f->started;
		out[n].readers = f->refs - 1;
	}
	pthread_mutex_unlock(&u->mu);
	return n;
}

struct reader {
	struct srv *s;
	struct srv_req *q;
	struct inflight *f;
	uint64_t from, len;
	int gen;
	int fd;
	int from_blob;
};

static ssize_t read_cb(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct reader *r = cls;
	struct srv_upstream *u = r->s->up;
	uint64_t off = r->from + pos, avail;
	int done;

	if (pos >= r->len)
		return MHD_CONTENT_READER_END_OF_STREAM;
	pthread_mutex_lock(&u->mu);
	for (;;) {
		if (r->f->gen != r->gen || (r->f->done && r->f->err) || u->cancel) {
			pthread_mutex_unlock(&u->mu);
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
		/* data to send: some past off, and not only the held-back last byte */
		if (r->f->done || (r->f->avail > off && off + 1 < r->from + r->len))
			break;
		util_cond_wait_ms(&u->cv, &u->mu, (long)(READ_WAIT_S * 1000));
	}
	done = r->f->done;
	avail = r->f->avail;
	pthread_mutex_unlock(&u->mu);
	if (done && !r->from_blob) {
		if (r->fd >= 0)
			close(r->fd);
		r->fd = open(r->f->blob, O_RDONLY | O_CLOEXEC);
		r->from_blob = 1;
		if (r->fd < 0)
			return MHD_CONTENT_READER_END_WITH_ERROR;
	} else if (r->fd < 0) {
		r->fd = open(r->f->part, O_RDONLY | O_CLOEXEC);
		if (r->fd < 0)
			return 0; /* renamed into the store just now: next call reads the blob */
	}
	size_t want = max;
	if (want > r->len - pos)
		want = (size_t)(r->len - pos);
	if (!done && want > avail - off)
		want = (size_t)(avail - off);
	/* the answer's last byte waits for the digest: a client never receives
	 * a complete response with bad bytes, only a cut one */
	if (!done && off + want >= r->from + r->len)
		want = (size_t)(r->from + r->len - 1 - off);
	if (!want) {
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
		return 0;
	}
	ssize_t got = pread(r->fd, buf, want, (off_t)off);
	if (got <= 0)
		return got == 0 && !done ? 0 : MHD_CONTENT_READER_END_WITH_ERROR;
	r->q->streamed += (uint64_t)got;
	return got;
}

static void reader_free(void *cls)
{
	struct reader *r = cls;
	struct srv_upstream *u = r->s->up;
	if (r->fd >= 0)
		close(r->fd);
	if (r->f) {
		pthread_mutex_lock(&u->mu);
		if (--r->f->refs == 0)
			free(r->f);
		pthread_mutex_unlock(&u->mu);
	}
	free(r);
}

static ssize_t no_body(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)cls;
	(void)pos;
	(void)buf;
	(void)max;
	return MHD_CONTENT_READER_END_OF_STREAM;
}

/* 1 when the entry's content is already stored (another repo or revision
 * has it), with its blob's path in blob. */
static int stored_blob(struct srv *s, const struct fetch_entry *e, char *blob, size_t len)
{
	struct store *st = srv_store_take(s);
	struct hm_ctx ctx = {0};
	char sha[65] = "";
	int yes = 0;

	if (st) {
		if (e->lfs) {
			memcpy(sha, e->sha256, 65);
			if (store_blob_has(&ctx, st, sha, e->size, &yes))
				yes = 0;
		} else {
			uint64_t size;
			int found = 0;
			if (!store_blob_by_git_oid(&ctx, st, e->oid, sha, &size, &found) && found && size == e->size &&
			    store_blob_has(&ctx, st, sha, size, &yes))
				yes = 0;
		}
		if (yes)
			store_blob_path(st, sha, blob, len);
	}
	srv_store_put(s, st);
	return yes;
}

/* The size is known: a store that cannot take the file says so now (1, the
 * answer queued in *ret), unless its download already runs (0). */
static int no_room(struct srv_req *q, struct MHD_Connection *c, const char *repo, const struct fetch_entry *e,
		   enum MHD_Result *ret)
{
	struct srv *s = q->s;
	struct statvfs vfs;
	int running = 0;
	char key[80];

	if (e->lfs)
		snprintf(key, sizeof(key), "%s", e->sha256);
	else
		snprintf(key, sizeof(key), "git-%s", e->oid);
	pthread_mutex_lock(&s->up->mu);
	for (struct inflight *x = s->up->inflight; x; x = x->next)
		running |= !strcmp(x->key, key);
	pthread_mutex_unlock(&s->up->mu);
	if (running || statvfs(s->o->store_dir, &vfs) != 0)
		return 0;
	uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	if (avail >= e->size)
		return 0;
	if (s->o->access_log)
		fprintf(s->o->access_log, "hubmirror: pull-through of %s/%s refused: %llu bytes free in '%s', it needs %llu\n",
			repo, e->path, (unsigned long long)avail, s->o->store_dir, (unsigned long long)e->size);
	*ret = srv_send_error(q, c, 507, NULL,
			      "the mirror cannot store '%s': no space left on its disk (%llu MiB free, the file needs %llu MiB)",
			      e->path, (unsigned long long)(avail >> 20), (unsigned long long)((e->size + (1 << 20) - 1) >> 20));
	return 1;
}

/* The status line waits for the first body byte of download fl (or its
 * failure): a store that cannot take the file, an upstream that refuses,
 * must not become 200 followed by nothing. 1 when it failed (the answer is
 * queued in *ret and this request's reference to fl is dropped), else 0. */
static int first_byte_failed(struct srv_req *q, struct MHD_Connection *c, const struct fetch_entry *e,
			     struct inflight *fl, enum MHD_Result *ret)
{
	struct srv_upstream *u = q->s->up;
	double until = util_now() + FIRST_BYTE_WAIT_S;
	enum hm_err ferr = HM_OK;
	char why[512] = "";

	pthread_mutex_lock(&u->mu);
	while (!fl->done && fl->avail == 0 && !u->cancel && util_now() < until) {
		util_cond_wait_ms(&u->cv, &u->mu, 100);
	}
	if (fl->done && fl->err) {
		ferr = fl->err;
		snprintf(why, sizeof(why), "%s", fl->errmsg);
	}
	if (ferr && --fl->refs == 0)
		free(fl);
	pthread_mutex_unlock(&u->mu);
	if (!ferr)
		return 0;
	if (ferr == HM_ERR_NOSPC) {
		*ret = srv_send_error(q, c, 507, NULL, "the mirror cannot store '%s': %s", e->path, why);
	} else if (ferr == HM_ERR_IO || ferr == HM_ERR_NOMEM) {
		snprintf(q->retry_after, sizeof(q->retry_after), "30");
		*ret = srv_send_error(q, c, 503, NULL, "the mirror cannot store '%s': %s", e->path, why);
	} else if (ferr == HM_ERR_BAD_INPUT) { /* the upstream sent what we refuse (a redirect, a name) */
		*ret = srv_send_error(q, c, 502, NULL, "upstream: %s", why);
	} else {
		*ret = srv_send_err(q, c, ferr, why);
	}
	return 1;
}

enum MHD_Result srv_up_serve_file(struct srv_req *q, struct MHD_Connection *c, const char *type,
				  const char *repo, const char *commit, const struct fetch_entry *e,
				  const struct fetch_entry *all, size_t nall, const char *ref,
				  uint64_t from, uint64_t len, int ranged)
{
	struct srv *s = q->s;
	struct srv_file f = {e->path, e->size, e->lfs ? e->sha256 : "", e->oid, e->lfs};
	struct MHD_Response *resp;
	char blob[4096];
	enum MHD_Result nm;

	/* a cache revalidating its copy needs no download */
	if (srv_not_modified(q, c, commit, &f, &nm))
		return nm;
	if (stored_blob(s, e, blob, sizeof(blob))) {
		int fd = open(blob, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			q->cache = "hit";
			resp = len ? MHD_create_response_from_fd_at_offset64(len, fd, (int64_t)from)
				   : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
			if (!len)
				close(fd);
			if (!resp) {
				if (len)
					close(fd);
				return MHD_NO;
			}
			return srv_queue_file(q, c, resp, commit, &f, ranged, from, len);
		}
		if (errno == EMFILE || errno == ENFILE)
			return srv_open_error(q, c, errno); /* stored: no download for want of a descriptor */
	}
	if (!strcmp(q->method, "HEAD")) {
		/* headers from the listing; no download for a HEAD */
		resp = MHD_create_response_from_callback(len, 4096, no_body, NULL, NULL);
		if (!resp)
			return MHD_NO;
		q->cache = NULL; /* nothing pulled through: not a cache miss (metrics, stats, log) */
		return srv_queue_file(q, c, resp, commit, &f, ranged, from, len);
	}
	if (no_room(q, c, repo, e, &nm))
		return nm;
	struct inflight *fl = start_download(s, q, type, repo, commit, e, all, nall, ref);
	if (!fl)
		return srv_send_error(q, c, 503, NULL, "cannot start the pull-through of '%s'", e->path);
	if (first_byte_failed(q, c, e, fl, &nm))
		return nm;
	struct reader *r = calloc(1, sizeof(*r));
	if (!r) {
		pthread_mutex_lock(&s->up->mu);
		if (--fl->refs == 0)
			free(fl);
		pthread_mutex_unlock(&s->up->mu);
		return MHD_NO;
	}
	r->s = s;
	r->q = q;
	r->f = fl;
	r->from = from;
	r->len = len;
	r->fd = -1;
	pthread_mutex_lock(&s->up->mu);
	r->gen = fl->gen;
	pthread_mutex_unlock(&s->up->mu);
	resp = MHD_create_response_from_callback(len, 256 << 10, read_cb, r, reader_free);
	if (!resp) {
		reader_free(r);
		return MHD_NO;
	}
	q->cache = "miss";
	q->streaming = 1;
	return srv_queue_file(q, c, resp, commit, &f, ranged, from, len);
}
