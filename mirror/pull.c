/* pull.c - pull one revision of a repo into the store, in four steps: plan
 * (select files, skip what is stored, one job per distinct content, check
 * free space), download (fetch, adopt verified blobs, record transfers),
 * collect (per-file results) and record (the revision). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include "mirror.h"
#include "../util/util.h"
#include "../store/index.h"
#include "../store/stats.h"
#include "../store/torrents.h"

#define FLUSH_EVERY_S 0.5
#define FLUSH_EVERY_FILES 256
#define DURABLE_MIN (1u << 20) /* smaller blobs are synced in batches by store_flush */
#define CANCEL_EVERY 1024      /* entries between looks at the cancel flag */

/* One per distinct content: kept small, a repo may have 100,000 of them.
 * The URL and temp paths exist only while the job runs (job_begin to
 * job_done); a skipped job's stored sha256 goes to fj.sha256. */
struct pull_job {
	struct fetch_job fj;
	char key[69];           /* an LFS sha256 or "git-<oid>": the lock and temp names */
	unsigned char skipped;  /* found in the store once locked */
	unsigned char credited; /* its transfer is counted on one file already */
	unsigned char via_swarm; /* came from the BitTorrent swarm (pull --p2p) */
	int lockfd;
	char *url, *part, *state;
	int64_t started_at;
};

struct pull {
	struct hm_ctx *ctx;
	struct store *st;
	struct fetch_client *fc;
	const struct mirror_pull_opts *o;
	const char *commit;
	const char **only;      /* o->only, sorted (for bsearch) */
	struct fetch_entry *ents;
	size_t nents;
	struct pull_job *jobs;
	struct fetch_job **jp;
	size_t njobs;
	size_t *job_of;         /* file index -> job index, or SIZE_MAX when present */
	size_t *slots;          /* open addressing over job keys: job index + 1, 0 = free */
	size_t nslots;
	int *held;              /* locks of finished jobs, released by the next flush */
	char (*held_keys)[80];
	size_t nheld, capheld;
	double last_flush;
	enum hm_err flush_err;  /* a flush that failed outside job_done */
	int gated;              /* the hub says the repo is gated (its revision answer) */
	int restricted;         /* ... or private, or does not say it is public */
	int asked;              /* the hub answered for this revision (not the store) */
	char refused[512];      /* the first file refused for want of access (401/403) */
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int selected(const struct pull *p, const char *path)
{
	const struct mirror_pull_opts *o = p->o;
	if (o->only)
		return bsearch(&path, p->only, o->nonly, sizeof(*p->only), cmp_str) != NULL;
	if (o->ninclude) {
		int any = 0;
		for (size_t i = 0; i < o->ninclude && !any; i++)
			any = util_glob_match(o->include[i], path);
		if (!any)
			return 0;
	}
	for (size_t i = 0; i < o->nexclude; i++)
		if (util_glob_match(o->exclude[i], path))
			return 0;
	return 1;
}

/* Is this entry's content in the store? Fills sha256 when it is. */
static enum hm_err present(struct hm_ctx *ctx, struct store *st, const struct fetch_entry *e,
			   char sha256[65], int *yes)
{
	enum hm_err err;
	*yes = 0;
	if (e->lfs) {
		err = store_blob_has(ctx, st, e->sha256, e->size, yes);
		if (!err && *yes)
			memcpy(sha256, e->sha256, 65);
		return err;
	}
	uint64_t size;
	int found;
	char sha[65];
	err = store_blob_by_git_oid(ctx, st, e->oid, sha, &size, &found);
	if (err || !found || size != e->size)
		return err;
	err = store_blob_has(ctx, st, sha, size, yes);
	if (!err && *yes)
		memcpy(sha256, sha, 65);
	return err;
}

/* Writes queued rows, then lets other processes see the blobs. */
static enum hm_err flush(struct pull *p)
{
	enum hm_err err = store_flush(p->ctx, p->st);
	for (size_t i = 0; i < p->nheld; i++)
		store_unlock(p->st, p->held_keys[i], p->held[i]);
	p->nheld = 0;
	p->last_flush = util_now();
	return err;
}

static void job_paths_free(struct pull_job *j)
{
	free(j->url);
	free(j->part);
	free(j->state);
	j->url = j->part = j->state = NULL;
	j->fj.url = j->fj.part_path = j->fj.state_path = NULL;
}

/* The URL and temp paths of a job about to run: 0, or -1 out of memory. */
static int job_paths(struct pull *p, struct pull_job *j)
{
	char part[4096], state[4096];
	if (j->part && j->state && j->url)
		return 0; /* made for the swarm already (from_swarm) */
	job_paths_free(j);
	store_part_paths(p->st, j->key, part, state, sizeof(part));
	j->part = util_strdup(part);
	j->state = util_strdup(state);
	j->url = fetch_resolve_url(p->fc, p->o->type, p->o->repo, p->commit, j->fj.name);
	j->fj.url = j->url;
	j->fj.part_path = j->part;
	j->fj.state_path = j->state;
	return j->part && j->state && j->url ? 0 : -1;
}

static int job_begin(void *ud, struct fetch_job *fj)
{
	struct pull_job *j = fj->user;
	struct pull *p = ud;
	struct fetch_entry e = {0};
	int yes = 0;

	if (store_lock_try(p->ctx, p->st, j->key, &j->lockfd) == HM_ERR_LOCKED) {
		/* another process is fetching it: look again soon, but never wait
		 * while holding locks of our own finished jobs (that process may be
		 * waiting for one of them: a deadlock) */
		if (p->nheld) {
			enum hm_err err = flush(p);
			if (err && !p->flush_err)
				p->flush_err = err;
		}
		return 2;
	}
	e.lfs = fj->expect_sha256 != NULL;
	e.size = fj->size;
	if (e.lfs)
		memcpy(e.sha256, fj->expect_sha256, 65);
	else
		memcpy(e.oid, fj->expect_git_oid, 41);
	if (present(p->ctx, p->st, &e, fj->sha256, &yes) == HM_OK && yes) {
		store_unlock(p->st, j->key, j->lockfd);
		j->lockfd = -1;
		j->skipped = 1;
		return 1;
	}
	if (job_paths(p, j)) {
		/* out of memory: the job fails, its lock goes */
		store_unlock(p->st, j->key, j->lockfd);
		j->lockfd = -1;
		fetch_job_fail(fj, HM_ERR_NOMEM, "out of memory");
		return 3;
	}
	j->started_at = util_unix_time();
	return 0;
}

/* Keeps a finished job's lock until its rows are flushed. */
static enum hm_err hold_lock(struct pull *p, struct pull_job *j)
{
	if (p->nheld == p->capheld) {
		size_t nc = p->capheld ? p->capheld * 2 : 64;
		int *nh = realloc(p->held, nc * sizeof(*nh));
		char(*nk)[80] = nh ? realloc(p->held_keys, nc * sizeof(*nk)) : NULL;
		if (nh)
			p->held = nh;
		if (nk)
			p->held_keys = nk;
		if (!nh || !nk)
			return hm_fail(p->ctx, HM_ERR_NOMEM, "out of memory");
		p->capheld = nc;
	}
	p->held[p->nheld] = j->lockfd;
	memcpy(p->held_keys[p->nheld], j->key, sizeof(j->key));
	p->nheld++;
	j->lockfd = -1;
	return HM_OK;
}

static const char *job_msg(const struct fetch_job *fj)
{
	return fj->errmsg && fj->errmsg[0] ? fj->errmsg : hm_strerror(fj->err);
}

static enum hm_err job_done(void *ud, struct fetch_job *fj)
{
	struct pull_job *j = fj->user;
	struct pull *p = ud;
	enum hm_err err = HM_OK, e2;
	struct store_download d = {
		.repo_type = p->o->type, .repo = p->o->repo, .revision = p->commit, .path = fj->name,
		.size = fj->size, .bytes = fj->bytes_wire, .seconds = fj->seconds,
		.connections = fj->connections, .retries = fj->retries,
		/* the host that sent the bytes (the CDN of an LFS file), not the hub that redirected */
		.endpoint = fj->host ? fj->host : fetch_client_endpoint(p->fc), .started_at = j->started_at,
	};
	if (!fj->err) {
		/* this job's own message, whatever else writes the context's */
		struct hm_ctx jc = {.cancel = p->ctx->cancel};
		err = store_blob_adopt(&jc, p->st, j->part, fj->sha256, fj->size,
				       fj->expect_git_oid ? fj->git_oid : NULL, fj->size >= DURABLE_MIN);
		if (err) {
			fetch_job_fail(fj, err, jc.errmsg);
		} else if (fj->has_merkle) {
			/* stored; the torrent is a bonus (serve --p2p makes it otherwise) */
			struct hm_ctx tc = {0};
			if (mirror_torrent_from_tree(&tc, p->st, fj->sha256, fj->size, fj->merkle_root, fj->merkle_layer,
						     fj->merkle_layer_len)) {
				/* made lazily from the file then */
			}
		}
		free(fj->merkle_layer);
		fj->merkle_layer = NULL;
		fj->has_merkle = 0;
	}
	if (fj->expect_sha256) /* an upload that ran alongside a failed download */
		store_blob_streaming_stop(p->st, fj->expect_sha256);
	d.sha256 = fj->err ? NULL : fj->sha256;
	d.result = fj->err ? "failed" : "ok";
	d.error = fj->err ? job_msg(fj) : NULL;
	e2 = store_record_download(p->ctx, p->st, &d);
	/* the recorded row has copies: the job keeps only its result */
	free(fj->host);
	fj->host = NULL;
	job_paths_free(j);
	if (!e2 && j->lockfd >= 0)
		e2 = hold_lock(p, j);
	if (err == HM_ERR_NOSPC || err == HM_ERR_DB)
		return hm_fail(p->ctx, err, "%s", job_msg(fj));
	if ((fj->err == HM_ERR_GATED || fj->err == HM_ERR_AUTH) && !p->refused[0]) {
		/* every other file would be refused the same way: stop, one message */
		snprintf(p->refused, sizeof(p->refused), "%s", job_msg(fj));
		return hm_fail(p->ctx, fj->err, "%s", job_msg(fj));
	}
	if (e2)
		return e2;
	if (p->flush_err)
		return p->flush_err;
	if (p->nheld >= FLUSH_EVERY_FILES || util_now() - p->last_flush >= FLUSH_EVERY_S)
		return flush(p);
	return HM_OK;
}

static void job_progress(void *ud, struct fetch_job *fj, uint64_t contiguous)
{
	struct pull *p = ud;
	/* an S3 store uploads a large file's parts while the rest downloads */
	if (fj->expect_sha256)
		store_blob_streaming(p->st, fj->expect_sha256, fj->size, fj->part_path, contiguous);
	if (p->o->on_progress)
		p->o->on_progress(p->o->progress_ud, fj->name, contiguous);
}

void mirror_pull_result_release(struct mirror_pull_result *res)
{
	for (size_t i = 0; i < res->nfiles; i++) {
		free(res->files[i].path);
		free(res->files[i].errmsg);
	}
	free(res->files);
	memset(res, 0, sizeof(*res));
}

/* One line for a gated repo whose files were refused (the access page from
 * the hub's message when it gave one, else the repo's page on the endpoint). */
static enum hm_err gated_message(struct hm_ctx *ctx, struct fetch_client *fc, const struct mirror_pull_opts *o,
				 const char *refused)
{
	char url[600] = "";
	const char *u = strstr(refused, "request access at http");
	const char *ds = strcmp(o->type, "dataset") ? "" : "datasets/";
	if (u) {
		u += strlen("request access at ");
		snprintf(url, sizeof(url), "%.*s", (int)strcspn(u, " ,;"), u);
	} else {
		snprintf(url, sizeof(url), "%s/%s%s", fetch_client_endpoint(fc), ds, o->repo);
	}
	if (fetch_client_has_token(fc))
		return hm_fail(ctx, HM_ERR_GATED, "the token has no access to gated '%s%s': request access at %s", ds,
			       o->repo, url);
	return hm_fail(ctx, HM_ERR_GATED, "'%s%s' is gated: request access at %s, then set HF_TOKEN", ds, o->repo, url);
}

static int is_commit(const char *rev)
{
	return rev && util_is_hex(rev, 40);
}

static size_t key_hash(const char *key)
{
	size_t h = 1469598103934665603ULL;
	for (; *key; key++)
		h = (h ^ (unsigned char)*key) * 1099511628211ULL;
	return h;
}

/* The job of key: found, or a new one (*added = 1) at index p->njobs. */
static size_t job_slot(struct pull *p, const char *key, int *added)
{
	size_t mask = p->nslots - 1, i = key_hash(key) & mask;
	*added = 0;
	for (; p->slots[i]; i = (i + 1) & mask)
		if (!strcmp(p->jobs[p->slots[i] - 1].key, key))
			return p->slots[i] - 1;
	p->slots[i] = p->njobs + 1;
	*added = 1;
	return p->njobs;
}

/* The listing of a stored revision (offline, or the hub out of reach). */
static enum hm_err list_stored(struct pull *p, struct mirror_pull_result *res)
{
	const struct mirror_pull_opts *o = p->o;
	struct store_file *sf = NULL;
	size_t n = 0;
	enum hm_err err = store_resolve(p->ctx, p->st, o->type, o->repo, o->revision ? o->revision : "main", res->commit);
	if (!err)
		err = store_list_files(p->ctx, p->st, o->type, o->repo, res->commit, &sf, &n);
	if (err)
		return err;
	p->ents = calloc(n ? n : 1, sizeof(*p->ents));
	if (!p->ents) {
		store_files_free(sf, n);
		return hm_fail(p->ctx, HM_ERR_NOMEM, "out of memory");
	}
	for (; p->nents < n; p->nents++) {
		struct fetch_entry *e = &p->ents[p->nents];
		e->path = util_strdup(sf[p->nents].path);
		e->size = sf[p->nents].size;
		e->lfs = sf[p->nents].lfs;
		memcpy(e->oid, sf[p->nents].git_oid, 41);
		if (e->lfs)
			memcpy(e->sha256, sf[p->nents].sha256, 65);
		if (!e->path) {
			store_files_free(sf, n);
			return hm_fail(p->ctx, HM_ERR_NOMEM, "out of memory");
		}
	}
	store_files_free(sf, n);
	return HM_OK;
}

/* Whether every file the pull selects is in the stored listing. */
static int stored_has_selection(struct pull *p)
{
	size_t nsel = 0;
	for (size_t i = 0; i < p->nents; i++)
		nsel += (size_t)selected(p, p->ents[i].path);
	return p->o->only ? nsel == p->o->nonly : nsel > 0;
}

static void drop_listing(struct pull *p)
{
	fetch_entries_free(p->ents, p->nents);
	p->ents = NULL;
	p->nents = 0;
}

/* The listing: the one given (copied), the stored one (offline, a pinned
 * commit the store holds, or the hub out of reach), or from the hub. */
static enum hm_err pull_list(struct pull *p, struct mirror_pull_result *res)
{
	const struct mirror_pull_opts *o = p->o;
	enum hm_err err;
	if (!(o->commit && o->entries)) {
		if (o->offline) {
			if ((err = list_stored(p, res)) == HM_ERR_NOT_FOUND)
				return hm_fail(p->ctx, err, "offline (HF_HUB_OFFLINE or --offline): revision '%s' of '%s' is not in the store",
					       o->revision ? o->revision : "main", o->repo);
			return err;
		}
		if (o->prefer_store && o->revision && is_commit(o->revision)) {
			struct hm_ctx quiet = {0};
			struct hm_ctx *real = p->ctx;
			p->ctx = &quiet;
			err = list_stored(p, res);
			p->ctx = real;
			if (!err && stored_has_selection(p))
				return HM_OK; /* pinned and stored: no network */
			drop_listing(p);
		}
		err = fetch_hub_revision_info(p->ctx, p->fc, o->type, o->repo, o->revision, res->commit, &p->gated,
					      &p->restricted);
		p->asked = !err;
		if (!err)
			err = fetch_hub_tree(p->ctx, p->fc, o->type, o->repo, res->commit, &p->ents, &p->nents);
		if (err == HM_ERR_UNREACHABLE || err == HM_ERR_NET) {
			/* as `hf download` does: the hub is out of reach, the revision is stored */
			char why[sizeof(res->stale)];
			struct hm_ctx quiet = {0};
			struct hm_ctx *real = p->ctx;
			snprintf(why, sizeof(why), "%.500s", p->ctx->errmsg);
			drop_listing(p);
			p->ctx = &quiet;
			enum hm_err e2 = list_stored(p, res);
			p->ctx = real;
			if (!e2 && stored_has_selection(p)) {
				snprintf(res->stale, sizeof(res->stale), "%s", why);
				return HM_OK;
			}
			drop_listing(p);
			res->commit[0] = 0;
		}
		return err;
	}
	if (!util_is_hex(o->commit, 40))
		return hm_fail(p->ctx, HM_ERR_USAGE, "invalid commit '%s'", o->commit);
	memcpy(res->commit, o->commit, 41);
	/* a private copy: this function frees its listing */
	p->ents = calloc(o->nentries ? o->nentries : 1, sizeof(*p->ents));
	if (!p->ents)
		return hm_fail(p->ctx, HM_ERR_NOMEM, "out of memory");
	for (; p->nents < o->nentries; p->nents++) {
		p->ents[p->nents] = o->entries[p->nents];
		p->ents[p->nents].path = util_strdup(o->entries[p->nents].path);
		if (!p->ents[p->nents].path)
			return hm_fail(p->ctx, HM_ERR_NOMEM, "out of memory");
	}
	return HM_OK;
}

static void job_init(struct pull_job *j, const char *key, const struct fetch_entry *e, const char *name)
{
	memcpy(j->key, key, sizeof(j->key));
	j->lockfd = -1;
	j->fj.name = name;
	j->fj.size = e->size;
	j->fj.expect_sha256 = e->lfs ? e->sha256 : NULL;
	j->fj.expect_git_oid = e->lfs ? NULL : e->oid;
	/* the blob's BitTorrent v2 tree in the same pass as its SHA-256 */
	j->fj.merkle_piece = e->lfs && e->size ? mirror_torrent_piece_size(e->size) : 0;
	j->fj.user = j;
}

static enum hm_err cancelled(struct hm_ctx *ctx, size_t i)
{
	if (i % CANCEL_EVERY == 0 && hm_cancelled(ctx))
		return hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
	return HM_OK;
}

/* Refuses a pull the store's filesystem cannot hold (unless forced): the
 * sizes are known before the first byte. Partial downloads count as done. */
static enum hm_err check_space(struct pull *p)
{
	struct statvfs vf;
	uint64_t need = 0, have, blk;
	if (p->o->force || !p->njobs || statvfs(store_dir(p->st), &vf) != 0)
		return HM_OK;
	blk = vf.f_frsize ? vf.f_frsize : 4096;
	for (size_t k = 0; k < p->njobs; k++) {
		struct stat sb;
		char part[4096];
		uint64_t size = p->jobs[k].fj.size, done = 0;
		store_part_paths(p->st, p->jobs[k].key, part, NULL, sizeof(part));
		if (stat(part, &sb) == 0 && sb.st_size > 0)
			done = (uint64_t)sb.st_size < size ? (uint64_t)sb.st_size : size;
		/* every file takes whole blocks */
		need += (size + blk - 1) / blk * blk - (done / blk * blk);
	}
	have = (uint64_t)vf.f_bavail * blk;
	if (need <= have)
		return HM_OK;
	char h1[32], h2[32];
	return hm_fail(p->ctx, HM_ERR_NOSPC,
		       "not enough space for '%s': %s to download, %s free in the store '%s' (--force tries anyway)",
		       p->o->repo, util_human_size(need, h1, sizeof(h1)), util_human_size(have, h2, sizeof(h2)),
		       store_dir(p->st));
}

/* Step 1: which files, which of them the store lacks, one job per content. */
static enum hm_err pull_plan(struct pull *p, struct mirror_pull_result *res)
{
	const struct mirror_pull_opts *o = p->o;
	struct hm_ctx *ctx = p->ctx;
	size_t nsel = 0;
	enum hm_err err;

	for (size_t i = 0; i < p->nents; i++) {
		if ((err = cancelled(ctx, i)))
			return err;
		nsel += (size_t)selected(p, p->ents[i].path);
	}
	if (o->only && nsel != o->nonly)
		return hm_fail(ctx, HM_ERR_ENTRY_NOT_FOUND, "some files to repair are no longer in '%s' at %s",
			       o->repo, res->commit);
	if (!nsel && p->nents && (o->ninclude || o->nexclude))
		return hm_fail(ctx, HM_ERR_USAGE, "no file of '%s' matches the --include/--exclude patterns", o->repo);
	p->nslots = 16;
	while (p->nslots < 2 * nsel)
		p->nslots *= 2;
	res->files = calloc(nsel ? nsel : 1, sizeof(*res->files));
	p->jobs = calloc(nsel ? nsel : 1, sizeof(*p->jobs));
	p->jp = calloc(nsel ? nsel : 1, sizeof(*p->jp));
	p->job_of = calloc(nsel ? nsel : 1, sizeof(*p->job_of));
	p->slots = calloc(p->nslots, sizeof(*p->slots));
	if (!res->files || !p->jobs || !p->jp || !p->job_of || !p->slots)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < p->nents; i++) {
		const struct fetch_entry *e = &p->ents[i];
		struct mirror_file *f;
		int yes, added;
		char key[sizeof(p->jobs[0].key)];
		if ((err = cancelled(ctx, i)))
			return err;
		if (!selected(p, e->path))
			continue;
		f = &res->files[res->nfiles];
		f->path = util_strdup(e->path);
		if (!f->path)
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		f->size = e->size;
		f->lfs = e->lfs;
		memcpy(f->git_oid, e->oid, 41);
		res->bytes_total += e->size;
		p->job_of[res->nfiles++] = SIZE_MAX;
		if ((err = present(ctx, p->st, e, f->sha256, &yes)))
			return err;
		f->present = yes;
		if (yes) {
			if (o->swarm && e->lfs && mirror_swarm_seed_stored(ctx, o->swarm, p->st, f->sha256))
				ctx->errmsg[0] = 0; /* seeding what is stored is a bonus */
			continue;
		}
		/* one job per distinct content: identical files share it */
		if (e->lfs)
			snprintf(key, sizeof(key), "%s", e->sha256);
		else
			snprintf(key, sizeof(key), "git-%s", e->oid);
		size_t k = job_slot(p, key, &added);
		p->job_of[res->nfiles - 1] = k;
		if (!added)
			continue;
		p->njobs++;
		p->jp[k] = &p->jobs[k].fj;
		job_init(&p->jobs[k], key, e, f->path);
	}
	return check_space(p);
}

/* pull --p2p: LFS blobs from the swarm first; records a transfer row per
 * blob that peers sent bytes of (endpoint "swarm"). The jobs left for HTTP
 * go to jp (*njp of them). */
static enum hm_err from_swarm(struct pull *p, struct fetch_job **jp, size_t *njp)
{
	struct mirror_swarm_item *it = calloc(p->njobs ? p->njobs : 1, sizeof(*it));
	size_t *job = calloc(p->njobs ? p->njobs : 1, sizeof(*job)), n = 0, k = 0;
	enum hm_err err = HM_OK;

	if (!it || !job) {
		err = hm_fail(p->ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < p->njobs; i++)
		if (p->jobs[i].fj.expect_sha256 && p->jobs[i].fj.size) {
			/* a stalled swarm download hands its pieces to these */
			if (job_paths(p, &p->jobs[i])) {
				err = hm_fail(p->ctx, HM_ERR_NOMEM, "out of memory");
				goto out;
			}
			it[n].sha256 = p->jobs[i].fj.expect_sha256;
			it[n].size = p->jobs[i].fj.size;
			it[n].part_path = p->jobs[i].part;
			it[n].state_path = p->jobs[i].state;
			job[n++] = i;
		}
	if (n)
		err = mirror_swarm_fetch(p->ctx, p->o->swarm, p->st, p->fc, it, n);
	for (size_t i = 0; i < n && !err; i++) {
		struct pull_job *j = &p->jobs[job[i]];
		if (it[i].present) {
			j->skipped = 1;
			memcpy(j->fj.sha256, it[i].sha256, 65);
			continue;
		}
		if (it[i].done) {
			j->via_swarm = 1;
			j->fj.bytes_wire = it[i].bytes_peers;
			j->fj.seconds = it[i].seconds;
			memcpy(j->fj.sha256, it[i].sha256, 65);
		} else if (!it[i].bytes_peers) {
			continue;
		}
		struct store_download d = {
			.repo_type = p->o->type, .repo = p->o->repo, .revision = p->commit, .path = j->fj.name,
			.sha256 = it[i].done ? it[i].sha256 : NULL, .size = it[i].size, .bytes = it[i].bytes_peers,
			.seconds = it[i].seconds, .result = it[i].done ? "ok" : "failed",
			.error = it[i].done ? NULL : it[i].errmsg, .endpoint = "swarm", .started_at = it[i].started_at,
		};
		err = store_record_download(p->ctx, p->st, &d);
	}
	for (size_t i = 0; i < p->njobs; i++)
		if (!p->jobs[i].via_swarm && !p->jobs[i].skipped)
			jp[k++] = &p->jobs[i].fj;
	*njp = k;
out:
	free(it);
	free(job);
	return err;
}

/* Step 2: fetch every job (locked against other processes, verified,
 * adopted into the store), then flush. */
static enum hm_err pull_download(struct pull *p)
{
	struct fetch_callbacks cb = {job_begin, job_done,
				     p->o->on_progress || store_is_remote(p->st) ? job_progress : NULL, p};
	struct fetch_job **jp = p->jp;
	size_t njp = p->njobs;
	enum hm_err err = HM_OK;
	if (p->o->swarm && p->njobs) {
		jp = calloc(p->njobs, sizeof(*jp));
		err = jp ? from_swarm(p, jp, &njp) : hm_fail(p->ctx, HM_ERR_NOMEM, "out of memory");
	}
	if (!err)
		err = fetch_download(p->ctx, p->fc, jp, njp, &cb);
	if (jp != p->jp)
		free(jp);
	enum hm_err ferr = flush(p);
	if (!err)
		err = p->flush_err ? p->flush_err : ferr;
	if (err == HM_ERR_NOSPC)
		err = hm_fail(p->ctx, err,
			      "no space left on the device of the store '%s': nothing stored is damaged; "
			      "free some space and run the same pull again to resume", store_dir(p->st));
	return err;
}

/* Step 3: each file's result from its job (a shared job's transfer is
 * credited to its first file). */
static void pull_collect(struct pull *p, struct mirror_pull_result *res)
{
	for (size_t i = 0; i < res->nfiles; i++) {
		struct mirror_file *f = &res->files[i];
		size_t k = p->job_of[i];
		if (k == SIZE_MAX)
			continue;
		struct pull_job *j = &p->jobs[k];
		if (j->skipped) {
			memcpy(f->sha256, j->fj.sha256, 65);
		} else if (j->fj.err) {
			f->err = j->fj.err;
			f->errmsg = util_strdup(job_msg(&j->fj));
			res->nfailed++;
		} else {
			memcpy(f->sha256, j->fj.sha256, 65);
			if (!j->credited) {
				j->credited = 1;
				f->downloaded = 1;
				f->bytes = j->fj.bytes_wire;
				res->bytes_downloaded += j->fj.bytes_wire;
				res->ndownloaded++;
			}
		}
	}
}

enum hm_err mirror_record_result(struct hm_ctx *ctx, struct store *st, const char *type, const char *repo,
				 const char *commit, const char *ref, const struct mirror_pull_result *res)
{
	struct store_file *sf = calloc(res->nfiles ? res->nfiles : 1, sizeof(*sf));
	enum hm_err err;
	if (!sf)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < res->nfiles; i++) {
		sf[i].path = res->files[i].path;
		sf[i].size = res->files[i].size;
		sf[i].lfs = res->files[i].lfs;
		memcpy(sf[i].sha256, res->files[i].sha256, 65);
		memcpy(sf[i].git_oid, res->files[i].git_oid, 41);
	}
	err = store_record_revision(ctx, st, type, repo, commit, ref, sf, res->nfiles);
	free(sf);
	return err;
}

/* Step 4: the revision, once every file is in the store. */
static enum hm_err pull_record(struct pull *p, struct mirror_pull_result *res)
{
	const struct mirror_pull_opts *o = p->o;
	const char *ref = is_commit(o->revision) ? NULL : (o->revision ? o->revision : "main");
	enum hm_err err = mirror_record_result(p->ctx, p->st, o->type, o->repo, res->commit, ref, res);
	/* a gated or private repo pulled with a token: serve --p2p keeps its
	 * blobs out of the swarm unless told otherwise (--p2p-private) */
	if (!err && p->asked)
		err = store_repo_set_needs_token(p->ctx, p->st, o->type, o->repo,
						 fetch_client_has_token(p->fc) && p->restricted);
	return err;
}

enum hm_err mirror_pull(struct hm_ctx *ctx, struct store *st, struct fetch_client *fc,
			const struct mirror_pull_opts *o, struct mirror_pull_result *res)
{
	struct pull p = {.ctx = ctx, .st = st, .fc = fc, .o = o, .last_flush = util_now()};
	enum hm_err err;
	double t0 = util_now();

	memset(res, 0, sizeof(*res));
	p.commit = res->commit;
	if (o->only) {
		p.only = malloc((o->nonly ? o->nonly : 1) * sizeof(*p.only));
		if (!p.only) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		memcpy(p.only, o->only, o->nonly * sizeof(*p.only));
		qsort(p.only, o->nonly, sizeof(*p.only), cmp_str);
	}
	if ((err = pull_list(&p, res)) || (err = pull_plan(&p, res)) || o->dry_run)
		goto out;
	if ((o->offline || res->stale[0]) && p.njobs) {
		/* offline: nothing may be downloaded; name what is missing */
		const char *miss = "";
		for (size_t i = 0; i < res->nfiles; i++)
			if (p.job_of[i] != SIZE_MAX) {
				miss = res->files[i].path;
				break;
			}
		err = hm_fail(ctx, HM_ERR_NOT_FOUND, "%s: %zu file(s) of '%s' at %.12s are not in the store (e.g. '%s')",
			      o->offline ? "offline (HF_HUB_OFFLINE or --offline)" : res->stale, p.njobs, o->repo,
			      res->commit, miss);
		goto out;
	}
	{
		/* progress counts files over the whole revision: say how many are here already */
		size_t nhere = 0;
		for (size_t i = 0; i < res->nfiles; i++)
			nhere += p.job_of[i] == SIZE_MAX;
		struct hm_event fev = {.kind = HM_EV_INFO, .msg = "files", .files_done = (int)nhere,
				       .files_total = (int)(nhere + p.njobs)};
		hm_emit(ctx, &fev);
	}
	err = pull_download(&p);
	if (err == HM_ERR_GATED || (p.gated && err == HM_ERR_AUTH))
		err = gated_message(ctx, fc, o, p.refused);
	pull_collect(&p, res);
	if (!err && res->nfailed) {
		enum hm_err first = HM_ERR_NET;
		for (size_t i = 0; i < res->nfiles; i++)
			if (res->files[i].err) {
				first = res->files[i].err;
				break;
			}
		err = hm_fail(ctx, first, "%zu file(s) failed", res->nfailed);
	}
	if (!err && !o->only)
		err = pull_record(&p, res);
out:
	res->seconds = util_now() - t0;
	for (size_t i = 0; i < p.nheld; i++)
		store_unlock(st, p.held_keys[i], p.held[i]);
	for (size_t k = 0; k < p.njobs; k++) {
		if (p.jobs[k].lockfd >= 0)
			store_unlock(st, p.jobs[k].key, p.jobs[k].lockfd);
		job_paths_free(&p.jobs[k]);
		fetch_job_release(&p.jobs[k].fj);
	}
	free(p.held);
	free(p.held_keys);
	free(p.jobs);
	free(p.jp);
	free(p.job_of);
	free(p.slots);
	free(p.only);
	fetch_entries_free(p.ents, p.nents);
	return err;
}
