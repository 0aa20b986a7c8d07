/* torch_convert.c - PyTorch checkpoints to safetensors, streamed: tensors
 * are laid out in the order their bytes sit in the source archives, so one
 * sequential pass per source file fills the output shards in turn. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../util/util.h"
#include "formats-int.h"
#include "torch-int.h"

struct conv {
	struct hm_ctx *ctx;
	struct fmt_pt_set *set;
	const char *out_dir;
	const struct fmt_pt_tensor **plan; /* output order */
	size_t n;
	size_t *shard_of;                  /* output shard of plan[i] */
	size_t *first;                     /* first plan index of each output shard, and n */
	size_t nout;
	uint64_t total;
	char **paths;                      /* output files written so far */
	size_t npaths;
	struct fmt_st_writer *w;
	size_t cur_out;                    /* output shard being written; nout = none */
	size_t base;                       /* plan index of the current source's first job */
	uint64_t done;
};

static char *out_name(const struct conv *c, size_t s)
{
	if (c->nout == 1)
		return util_strdup("model.safetensors");
	return util_asprintf("model-%05zu-of-%05zu.safetensors", s + 1, c->nout);
}

/* Declares output shard s and starts its file. */
static enum hm_err open_out(struct conv *c, size_t s)
{
	char *name = out_name(c, s), *path = NULL;
	enum hm_err err;
	struct hm_event ev = {0};
	uint64_t bytes = 0;
	if (!name || !(path = util_asprintf("%s/%s", c->out_dir, name))) {
		free(name);
		return hm_fail(c->ctx, HM_ERR_NOMEM, "out of memory");
	}
	if ((err = fmt_st_writer_new(c->ctx, path, &c->w)) || (err = fmt_st_writer_meta(c->w, "format", "pt")))
		goto out;
	for (size_t i = c->first[s]; i < c->first[s + 1]; i++) {
		const struct fmt_pt_tensor *t = c->plan[i];
		if ((err = fmt_st_writer_add(c->w, t->name, t->dtype, t->ndim, t->shape)))
			goto out;
		bytes += t->nbytes;
	}
	c->cur_out = s;
	ev.kind = HM_EV_FILE_START;
	ev.name = name;
	ev.total = bytes;
	hm_emit(c->ctx, &ev);
out:
	free(name);
	free(path);
	return err;
}

/* Finishes the current output file and remembers it for cleanup. */
static enum hm_err close_out(struct conv *c)
{
	char *name = out_name(c, c->cur_out), *path = NULL;
	struct hm_event ev = {0};
	enum hm_err err;
	if (!name || !(path = util_asprintf("%s/%s", c->out_dir, name))) {
		free(name);
		return hm_fail(c->ctx, HM_ERR_NOMEM, "out of memory");
	}
	err = fmt_st_writer_finish(c->w);
	fmt_st_writer_free(c->w);
	c->w = NULL;
	if (!err) {
		c->paths[c->npaths++] = path;
		path = NULL;
		ev.kind = HM_EV_FILE_DONE;
		ev.name = name;
		hm_emit(c->ctx, &ev);
	}
	c->cur_out = c->nout;
	free(name);
	free(path);
	return err;
}

static enum hm_err sink(void *ud, size_t job, const void *data, size_t n)
{
	struct conv *c = ud;
	enum hm_err err;
	size_t i = c->base + job, s = c->shard_of[i];
	if (!data) { /* a tensor starts: maybe the next output file */
		if (s != c->cur_out) {
			if (c->w && (err = close_out(c)))
				return err;
			if ((err = open_out(c, s)))
				return err;
		}
		return HM_OK;
	}
	if ((err = fmt_st_writer_write(c->w, data, n)))
		return err;
	c->done += n;
	if (n) {
		struct hm_event ev = {0};
		ev.kind = HM_EV_PROGRESS;
		ev.done = c->done;
		ev.total = c->total;
		hm_emit(c->ctx, &ev);
	}
	return HM_OK;
}

/* Lays the tensors out and cuts the output into shards of at most max
 * bytes of data (a bigger tensor gets a shard of its own). */
static enum hm_err plan(struct conv *c, uint64_t max)
{
	uint64_t cur = 0;
	char nb[128];
	c->n = fmt_pt_set_count(c->set);
	c->plan = calloc(c->n + 1, sizeof(*c->plan));
	c->shard_of = calloc(c->n + 1, sizeof(*c->shard_of));
	c->first = calloc(c->n + 2, sizeof(*c->first));
	if (!c->plan || !c->shard_of || !c->first)
		return hm_fail(c->ctx, HM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < c->n; i++) {
		c->plan[i] = fmt_pt_set_tensor(c->set, i);
		if (!strcmp(c->plan[i]->name, "__metadata__"))
			return hm_fail(c->ctx, HM_ERR_BAD_INPUT, "'%s': a tensor is named '__metadata__'",
				       fmt_pt_path(fmt_pt_set_shard(c->set, c->plan[i]->shard)));
		if (c->plan[i]->ndim > FMT_MAX_DIMS)
			return hm_fail(c->ctx, HM_ERR_BAD_INPUT, "tensor '%s' has too many dimensions",
				       fmt_pt_shown(c->plan[i]->name, nb, sizeof(nb)));
	}
	qsort(c->plan, c->n, sizeof(*c->plan), fmt_pt_stream_order);
	c->nout = 1;
	for (size_t i = 0; i < c->n; i++) {
		uint64_t b = c->plan[i]->nbytes;
		if (cur && b > max - (cur < max ? cur : max)) {
			c->first[c->nout++] = i;
			cur = 0;
		}
		cur += b;
		c->total += b;
		c->shard_of[i] = c->nout - 1;
	}
	c->first[c->nout] = c->n;
	if (!(c->paths = calloc(c->nout + 1, sizeof(*c->paths))))
		return hm_fail(c->ctx, HM_ERR_NOMEM, "out of memory");
	c->cur_out = c->nout;
	return HM_OK;
}

/* model.safetensors.index.json, as transformers writes it. */
static enum hm_err write_index(struct conv *c)
{
	json_t *root = json_object(), *meta = json_object(), *wm = json_object();
	char *path = NULL, *text = NULL;
	enum hm_err err = HM_OK;
	if (!root || !meta || !wm || json_object_set_new(meta, "total_size", json_integer((json_int_t)c->total)))
		goto nomem;
	for (size_t i = 0; i < c->n; i++) {
		char *name = out_name(c, c->shard_of[i]);
		if (!name || json_object_set_new(wm, c->plan[i]->name, json_string(name))) {
			free(name);
			goto nomem;
		}
		free(name);
	}
	if (json_object_set(root, "metadata", meta) || json_object_set(root, "weight_map", wm) ||
	    !(text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS)) ||
	    !(path = util_asprintf("%s/model.safetensors.index.json", c->out_dir)))
		goto nomem;
	if (util_write_file_atomic(path, text, strlen(text)) != 0)
		err = hm_fail(c->ctx, errno == ENOSPC ? HM_ERR_NOSPC : HM_ERR_IO, "cannot write '%s': %s", path,
			      strerror(errno));
	else
		c->paths[c->npaths++] = path, path = NULL;
	goto out;
nomem:
	err = hm_fail(c->ctx, HM_ERR_NOMEM, "out of memory");
out:
	free(path);
	free(text);
	json_decref(root);
	json_decref(meta);
	json_decref(wm);
	return err;
}

enum hm_err fmt_pt_to_safetensors(struct hm_ctx *ctx, const char *src, const char *out_dir,
				  const struct fmt_pt_convert_opts *opts, struct fmt_pt_convert_result *res)
{
	struct conv c;
	enum hm_err err;
	uint64_t max = opts && opts->max_shard_size ? opts->max_shard_size : FMT_PT_DEFAULT_SHARD;
	memset(&c, 0, sizeof(c));
	c.ctx = ctx;
	c.out_dir = out_dir;
	if (res)
		memset(res, 0, sizeof(*res));
	if ((err = fmt_pt_open_set(ctx, src, &c.set)) || (err = plan(&c, max)))
		goto out;
	if (util_mkdir_p(out_dir, 0755) != 0) {
		err = hm_fail(ctx, HM_ERR_IO, "cannot create '%s': %s", out_dir, strerror(errno));
		goto out;
	}
	/* One pass per source file over its share of the plan (contiguous: the
	 * plan is ordered by source first). */
	for (size_t s = 0, i = 0; s < fmt_pt_set_nshards(c.set); s++) {
		size_t k = i;
		while (k < c.n && c.plan[k]->shard == s)
			k++;
		c.base = i;
		if ((err = fmt_pt_stream(ctx, fmt_pt_set_shard(c.set, s), c.plan + i, k - i, out_dir, sink, &c)))
			goto out;
		i = k;
	}
	if (!c.n && (err = open_out(&c, 0))) /* an empty state dict: an empty file */
		goto out;
	if (c.w && (err = close_out(&c)))
		goto out;
	if (c.nout > 1 && (err = write_index(&c)))
		goto out;
	if (res) {
		res->tensors = c.n;
		res->shards = c.nout;
		res->bytes = c.total;
	}
out:
	fmt_st_writer_free(c.w);
	for (size_t i = 0; i < c.npaths; i++) {
		if (err)
			unlink(c.paths[i]);
		free(c.paths[i]);
	}
	free(c.paths);
	free(c.plan);
	free(c.shard_of);
	free(c.first);
	fmt_pt_set_close(c.set);
	return err;
}
