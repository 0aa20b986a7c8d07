/* pull.c - pull one revision of a repo into the store: resolve, list, skip
 * what is stored, download the rest (one job per distinct content), adopt
 * verified blobs, record transfers, then record the revision. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "mirror.h"
#include "../util/util.h"

#define FLUSH_EVERY_S 0.5
#define FLUSH_EVERY_FILES 256
#define DURABLE_MIN (1u << 20) /* smaller blobs are synced in batches by store_flush */

struct pull;

struct pull_job {
	struct fetch_job fj;
	struct pull *p;
	char key[80];
	char *url, *part, *state;
	int lockfd;
	int skipped;            /* found in the store once locked */
	char present_sha[65];
	int64_t started_at;
};

struct pull {
	struct hm_ctx *ctx;
	struct store *st;
	struct fetch_client *fc;
	const struct mirror_pull_opts *o;
	const char *commit;
	int *held;              /* locks waiting for the next flush */
	char (*held_keys)[80];
	size_t nheld, capheld;
	double last_flush;
	enum hm_err flush_err;
};

static int selected(const struct mirror_pull_opts *o, const char *path)
{
	if (o->only) {
		for (size_t i = 0; i < o->nonly; i++)
			if (!strcmp(o->only[i], path))
				return 1;
		return 0;
	}
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

static int job_begin(void *ud, struct fetch_job *fj)
{
	struct pull_job *j = fj->user;
	struct pull *p = ud;
	struct fetch_entry e = {0};
	int yes = 0;

	if (store_lock_try(p->ctx, p->st, j->key, &j->lockfd) == HM_ERR_LOCKED)
		return 2; /* another process is fetching it: look again soon */
	e.lfs = fj->expect_sha256 != NULL;
	e.size = fj->size;
	if (e.lfs)
		memcpy(e.sha256, fj->expect_sha256, 65);
	else
		memcpy(e.oid, fj->expect_git_oid, 41);
	if (present(p->ctx, p->st, &e, j->present_sha, &yes) == HM_OK && yes) {
		store_unlock(p->st, j->key, j->lockfd);
		j->lockfd = -1;
		j->skipped = 1;
		return 1;
	}
	j->started_at = util_unix_time();
	return 0;
}

static enum hm_err job_done(void *ud, struct fetch_job *fj)
{
	struct pull_job *j = fj->user;
	struct pull *p = ud;
	enum hm_err err = HM_OK;
	struct store_download d = {
		.repo_type = p->o->type, .repo = p->o->repo, .revision = p->commit, .path = fj->name,
		.size = fj->size, .bytes = fj->bytes_wire, .seconds = fj->seconds,
		.connections = fj->connections, .retries = fj->retries,
		.endpoint = fetch_client_endpoint(p->fc), .started_at = j->started_at,
	};
	if (!fj->err) {
		err = store_blob_adopt(p->ctx, p->st, j->part, fj->sha256, fj->size,
				       fj->expect_git_oid ? fj->git_oid : NULL, fj->size >= DURABLE_MIN);
		if (err) {
			fj->err = err;
			size_t ml = strnlen(p->ctx->errmsg, sizeof(fj->errmsg) - 1);
			memcpy(fj->errmsg, p->ctx->errmsg, ml);
			fj->errmsg[ml] = 0;
		}
	}
	d.sha256 = fj->err ? NULL : fj->sha256;
	d.result = fj->err ? "failed" : "ok";
	d.error = fj->err ? fj->errmsg : NULL;
	enum hm_err e2 = store_record_download(p->ctx, p->st, &d);
	if (j->lockfd >= 0) {
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
	}
	if (err == HM_ERR_NOSPC || err == HM_ERR_DB)
		return err;
	if (fj->err == HM_ERR_GATED || fj->err == HM_ERR_AUTH)
		/* every other file would be refused the same way: stop, one message */
		return hm_fail(p->ctx, fj->err, "%s", fj->errmsg);
	if (e2)
		return e2;
	if (p->nheld >= FLUSH_EVERY_FILES || util_now() - p->last_flush >= FLUSH_EVERY_S)
		return flush(p);
	return HM_OK;
}

static void job_progress(void *ud, struct fetch_job *fj, uint64_t contiguous)
{
	struct pull *p = ud;
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
static enum hm_err gated_message(struct hm_ctx *ctx, struct fetch_client *fc, const struct mirror_pull_opts *o)
{
	char url[600] = "";
	const char *u = strstr(ctx->errmsg, "request access at http");
	if (u) {
		u += strlen("request access at ");
		snprintf(url, sizeof(url), "%.*s", (int)strcspn(u, " ,;"), u);
	} else {
		snprintf(url, sizeof(url), "%s/%s%s", fetch_client_endpoint(fc), strcmp(o->type, "dataset") ? "" : "datasets/",
			 o->repo);
	}
	if (fetch_client_has_token(fc))
		return hm_fail(ctx, HM_ERR_GATED, "the token has no access to gated '%s%s': request access at %s",
			       strcmp(o->type, "dataset") ? "" : "datasets/", o->repo, url);
	return hm_fail(ctx, HM_ERR_GATED, "'%s%s' is gated: request access at %s, then set HF_TOKEN",
		       strcmp(o->type, "dataset") ? "" : "datasets/", o->repo, url);
}

static int is_commit(const char *rev)
{
	return rev && util_is_hex(rev, 40);
}

enum hm_err mirror_pull(struct hm_ctx *ctx, struct store *st, struct fetch_client *fc,
			const struct mirror_pull_opts *o, struct mirror_pull_result *res)
{
	struct fetch_entry *ents = NULL;
	size_t nents = 0, nsel = 0, njobs = 0;
	struct pull_job *jobs = NULL;
	struct fetch_job **jp = NULL;
	size_t *job_of = NULL; /* file index -> job index, or SIZE_MAX when present */
	struct store_file *sf = NULL;
	struct pull p = {ctx, st, fc, o, res->commit, NULL, NULL, 0, 0, util_now(), HM_OK};
	enum hm_err err;
	double t0 = util_now();
	int gated = 0;

	memset(res, 0, sizeof(*res));
	p.commit = res->commit;
	if (o->commit && o->entries) {
		const struct fetch_entry *given = o->entries;
		if (!util_is_hex(o->commit, 40)) {
			err = hm_fail(ctx, HM_ERR_USAGE, "invalid commit '%s'", o->commit);
			goto out;
		}
		memcpy(res->commit, o->commit, 41);
		/* a private copy: this function frees its listing */
		ents = calloc(o->nentries ? o->nentries : 1, sizeof(*ents));
		if (!ents) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		for (; nents < o->nentries; nents++) {
			ents[nents] = given[nents];
			ents[nents].path = util_strdup(given[nents].path);
			if (!ents[nents].path) {
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
				goto out;
			}
		}
	} else {
		err = fetch_hub_revision_info(ctx, fc, o->type, o->repo, o->revision, res->commit, &gated);
		if (err)
			goto out;
		err = fetch_hub_tree(ctx, fc, o->type, o->repo, res->commit, &ents, &nents);
		if (err)
			goto out;
	}
	for (size_t i = 0; i < nents; i++)
		nsel += (size_t)selected(o, ents[i].path);
	if (o->only && nsel != o->nonly) {
		err = hm_fail(ctx, HM_ERR_ENTRY_NOT_FOUND, "some files to repair are no longer in '%s' at %s",
			      o->repo, res->commit);
		goto out;
	}
	if (!nsel && nents && (o->ninclude || o->nexclude)) {
		err = hm_fail(ctx, HM_ERR_USAGE, "no file of '%s' matches the --include/--exclude patterns", o->repo);
		goto out;
	}
	res->files = calloc(nsel ? nsel : 1, sizeof(*res->files));
	jobs = calloc(nsel ? nsel : 1, sizeof(*jobs));
	jp = calloc(nsel ? nsel : 1, sizeof(*jp));
	job_of = calloc(nsel ? nsel : 1, sizeof(*job_of));
	if (!res->files || !jobs || !jp || !job_of) {
		err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nents; i++) {
		const struct fetch_entry *e = &ents[i];
		struct mirror_file *f;
		int yes;
		if (!selected(o, e->path))
			continue;
		f = &res->files[res->nfiles];
		f->path = util_strdup(e->path);
		if (!f->path) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		f->size = e->size;
		f->lfs = e->lfs;
		memcpy(f->git_oid, e->oid, 41);
		res->bytes_total += e->size;
		job_of[res->nfiles] = SIZE_MAX;
		res->nfiles++;
		err = present(ctx, st, e, f->sha256, &yes);
		if (err)
			goto out;
		f->present = yes;
		if (yes)
			continue;
		/* one job per distinct content: identical files share it */
		char key[80];
		if (e->lfs)
			snprintf(key, sizeof(key), "%s", e->sha256);
		else
			snprintf(key, sizeof(key), "git-%s", e->oid);
		size_t k;
		for (k = 0; k < njobs; k++)
			if (!strcmp(jobs[k].key, key))
				break;
		job_of[res->nfiles - 1] = k;
		if (k < njobs)
			continue;
		struct pull_job *j = &jobs[njobs++];
		char part[4096], state[4096];
		memcpy(j->key, key, sizeof(key));
		j->p = &p;
		j->lockfd = -1;
		store_part_paths(st, key, part, state, sizeof(part));
		j->part = util_strdup(part);
		j->state = util_strdup(state);
		j->url = fetch_resolve_url(fc, o->type, o->repo, res->commit, e->path);
		if (!j->part || !j->state || !j->url) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		j->fj.name = f->path;
		j->fj.url = j->url;
		j->fj.size = e->size;
		j->fj.part_path = j->part;
		j->fj.state_path = j->state;
		j->fj.expect_sha256 = e->lfs ? ents[i].sha256 : NULL;
		j->fj.expect_git_oid = e->lfs ? NULL : ents[i].oid;
		j->fj.user = j;
		jp[njobs - 1] = &j->fj;
	}

	{
		if (o->dry_run)
			goto out;
		/* progress counts files over the whole revision: say how many are here already */
		size_t nhere = 0;
		for (size_t i = 0; i < res->nfiles; i++)
			nhere += job_of[i] == SIZE_MAX;
		struct hm_event fev = {.kind = HM_EV_INFO, .msg = "files", .files_done = (int)nhere,
				       .files_total = (int)(nhere + njobs)};
		hm_emit(ctx, &fev);
		struct fetch_callbacks cb = {job_begin, job_done, o->on_progress ? job_progress : NULL, &p};
		enum hm_err derr = fetch_download(ctx, fc, jp, njobs, &cb);
		enum hm_err ferr = flush(&p);
		if (!derr)
			derr = ferr;
		err = derr;
		if (err == HM_ERR_GATED || (gated && err == HM_ERR_AUTH))
			err = gated_message(ctx, fc, o);
	}

	for (size_t i = 0; i < res->nfiles; i++) {
		struct mirror_file *f = &res->files[i];
		size_t k = job_of[i];
		if (k == SIZE_MAX)
			continue;
		struct pull_job *j = &jobs[k];
		if (j->skipped) {
			memcpy(f->sha256, j->present_sha, 65);
		} else if (j->fj.err) {
			f->err = j->fj.err;
			f->errmsg = util_strdup(j->fj.errmsg[0] ? j->fj.errmsg : hm_strerror(j->fj.err));
			res->nfailed++;
		} else {
			memcpy(f->sha256, j->fj.sha256, 65);
			/* the first file of a shared job carries its transfer */
			int first = 1;
			for (size_t q = 0; q < i && first; q++)
				first = job_of[q] != k;
			if (first) {
				f->downloaded = 1;
				f->bytes = j->fj.bytes_wire;
				res->bytes_downloaded += j->fj.bytes_wire;
				res->ndownloaded++;
			}
		}
	}
	if (!err && res->nfailed)
		err = hm_fail(ctx, res->files[0].err ? res->files[0].err : HM_ERR_NET, "%zu file(s) failed", res->nfailed);
	if (err)
		goto out;
	if (!o->only) {
		sf = calloc(res->nfiles ? res->nfiles : 1, sizeof(*sf));
		if (!sf) {
			err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < res->nfiles; i++) {
			sf[i].path = res->files[i].path;
			sf[i].size = res->files[i].size;
			sf[i].lfs = res->files[i].lfs;
			memcpy(sf[i].sha256, res->files[i].sha256, 65);
			memcpy(sf[i].git_oid, res->files[i].git_oid, 41);
		}
		const char *ref = is_commit(o->revision) ? NULL : (o->revision ? o->revision : "main");
		err = store_record_revision(ctx, st, o->type, o->repo, res->commit, ref, sf, res->nfiles);
	}
out:
	res->seconds = util_now() - t0;
	for (size_t i = 0; i < p.nheld; i++)
		store_unlock(st, p.held_keys[i], p.held[i]);
	if (jobs)
		for (size_t k = 0; k < njobs; k++) {
			if (jobs[k].lockfd >= 0)
				store_unlock(st, jobs[k].key, jobs[k].lockfd);
			free(jobs[k].url);
			free(jobs[k].part);
			free(jobs[k].state);
		}
	free(p.held);
	free(p.held_keys);
	free(jobs);
	free(jp);
	free(job_of);
	free(sf);
	fetch_entries_free(ents, nents);
	return err;
}
