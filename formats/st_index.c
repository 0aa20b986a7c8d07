/* st_index.c - sharded safetensors: model.safetensors.index.json joins the
 * shards into one tensor namespace, validated against the shards' headers. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../util/util.h"
#include "formats-int.h"

#define INDEX_MAX (64u << 20)

struct fmt_st_set {
	struct fmt_st **shards;
	char **names;
	size_t nshards;
	struct fmt_st_tensor *t;             /* copies, shard set */
	size_t n;
	const struct fmt_st_tensor **by_name;
	int64_t total_size;
};

struct resolve_dir {
	char dir[4096];
};

static enum hm_err resolve_in_dir(struct hm_ctx *ctx, void *ud, const char *shard, char *buf, size_t len)
{
	const struct resolve_dir *r = ud;
	if ((size_t)snprintf(buf, len, "%s/%s", r->dir, shard) >= len)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "path of shard '%s' is too long", shard);
	return HM_OK;
}

static int cmp_names(const void *a, const void *b)
{
	const struct fmt_st_tensor *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

void fmt_st_set_close(struct fmt_st_set *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->nshards; i++) {
		fmt_st_close(set->shards[i]);
		free(set->names[i]);
	}
	free(set->shards);
	free(set->names);
	free(set->t);
	free(set->by_name);
	free(set);
}

/* Gathers the shards' tensors and indexes them by name. */
static enum hm_err join(struct hm_ctx *ctx, struct fmt_st_set *set)
{
	size_t n = 0, k = 0;
	for (size_t s = 0; s < set->nshards; s++)
		n += fmt_st_count(set->shards[s]);
	set->t = calloc(n + 1, sizeof(*set->t));
	set->by_name = calloc(n + 1, sizeof(*set->by_name));
	if (!set->t || !set->by_name)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	for (size_t s = 0; s < set->nshards; s++)
		for (size_t i = 0; i < fmt_st_count(set->shards[s]); i++) {
			set->t[k] = *fmt_st_tensor(set->shards[s], i);
			set->t[k].shard = s;
			set->by_name[k] = &set->t[k];
			k++;
		}
	set->n = n;
	qsort(set->by_name, n, sizeof(*set->by_name), cmp_names);
	for (size_t i = 1; i < n; i++)
		if (!strcmp(set->by_name[i]->name, set->by_name[i - 1]->name))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "tensor '%s' is in two shards, '%s' and '%s'",
				       set->by_name[i]->name, set->names[set->by_name[i - 1]->shard],
				       set->names[set->by_name[i]->shard]);
	return HM_OK;
}

enum hm_err fmt_st_open_single(struct hm_ctx *ctx, const char *path, struct fmt_st_set **out)
{
	struct fmt_st_set *set = calloc(1, sizeof(*set));
	const char *slash = strrchr(path, '/');
	enum hm_err err;
	*out = NULL;
	if (!set)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	set->total_size = -1;
	set->shards = calloc(1, sizeof(*set->shards));
	set->names = calloc(1, sizeof(*set->names));
	if (!set->shards || !set->names || !(set->names[0] = util_strdup(slash ? slash + 1 : path))) {
		fmt_st_set_close(set);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	if ((err = fmt_st_open(ctx, path, &set->shards[0]))) {
		free(set->names[0]);
		set->names[0] = NULL;
		fmt_st_set_close(set);
		return err;
	}
	set->nshards = 1;
	if ((err = join(ctx, set))) {
		fmt_st_set_close(set);
		return err;
	}
	*out = set;
	return HM_OK;
}

enum hm_err fmt_st_set_adopt(struct hm_ctx *ctx, struct fmt_st **shards, char **names, size_t n,
			     struct fmt_st_set **out)
{
	struct fmt_st_set *set = calloc(1, sizeof(*set));
	enum hm_err err;
	*out = NULL;
	if (!set) {
		for (size_t i = 0; i < n; i++) {
			fmt_st_close(shards[i]);
			free(names[i]);
		}
		free(shards);
		free(names);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	set->total_size = -1;
	set->shards = shards;
	set->names = names;
	set->nshards = n;
	if ((err = join(ctx, set))) {
		fmt_st_set_close(set);
		return err;
	}
	*out = set;
	return HM_OK;
}

/* Index of name in set->names, or -1. */
static long shard_index(const struct fmt_st_set *set, const char *name)
{
	for (size_t i = 0; i < set->nshards; i++)
		if (!strcmp(set->names[i], name))
			return (long)i;
	return -1;
}

static enum hm_err parse_index(struct hm_ctx *ctx, const char *path, json_t *root, fmt_st_resolve_fn resolve,
			       void *ud, struct fmt_st_set *set)
{
	json_t *wm = json_object_get(root, "weight_map"), *md = json_object_get(root, "metadata"), *v;
	const char *k;
	enum hm_err err;
	if (!json_is_object(root) || !json_is_object(wm))
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': no \"weight_map\" object", path);
	if (json_is_object(md) && json_object_get(md, "total_size")) {
		json_t *ts = json_object_get(md, "total_size");
		if (json_is_integer(ts) && json_integer_value(ts) >= 0)
			set->total_size = json_integer_value(ts);
		else if (json_is_real(ts) && json_real_value(ts) >= 0 && json_real_value(ts) < 9e18)
			set->total_size = (int64_t)json_real_value(ts);
		else
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': metadata.total_size is not a size", path);
	}
	set->shards = calloc(json_object_size(wm) + 1, sizeof(*set->shards));
	set->names = calloc(json_object_size(wm) + 1, sizeof(*set->names));
	if (!set->shards || !set->names)
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	/* distinct shard names, in first-seen order */
	json_object_foreach(wm, k, v) {
		const char *s = json_string_value(v);
		if (!s)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': weight_map entry '%s' is not a file name", path, k);
		if (!util_path_is_safe(s) || strchr(s, '/'))
			return hm_fail(ctx, HM_ERR_BAD_INPUT,
				       "'%s': shard '%s' of tensor '%s' is not a file name in the index's directory", path, s, k);
		if (shard_index(set, s) >= 0)
			continue;
		if (!(set->names[set->nshards] = util_strdup(s)))
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
		set->nshards++;
	}
	for (size_t i = 0; i < set->nshards; i++) {
		char p[4096];
		if ((err = resolve(ctx, ud, set->names[i], p, sizeof(p))) || (err = fmt_st_open(ctx, p, &set->shards[i]))) {
			if (err == HM_ERR_NOT_FOUND)
				err = hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': shard '%s' is missing", path, set->names[i]);
			/* keep the arrays dense for close */
			for (size_t j = i; j < set->nshards; j++)
				free(set->names[j]);
			set->nshards = i;
			return err;
		}
	}
	if ((err = join(ctx, set)))
		return err;
	/* every listed tensor is in its shard, every shard tensor is listed */
	json_object_foreach(wm, k, v) {
		const struct fmt_st_tensor *t = fmt_st_set_find(set, k);
		if (!t)
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' is not in its shard '%s'", path, k,
				       json_string_value(v));
		if ((long)t->shard != shard_index(set, json_string_value(v)))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': tensor '%s' is listed in '%s' but is in '%s'", path, k,
				       json_string_value(v), set->names[t->shard]);
	}
	for (size_t i = 0; i < set->n; i++)
		if (!json_object_get(wm, set->t[i].name))
			return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s': shard '%s' has tensor '%s', which the weight_map does not list",
				       path, set->names[set->t[i].shard], set->t[i].name);
	return HM_OK;
}

enum hm_err fmt_st_open_index(struct hm_ctx *ctx, const char *index_path, fmt_st_resolve_fn resolve, void *ud,
			      struct fmt_st_set **out)
{
	struct fmt_st_set *set = NULL;
	struct resolve_dir rd;
	char *data = NULL;
	size_t len = 0;
	json_t *root = NULL;
	json_error_t je;
	enum hm_err err;

	*out = NULL;
	if (!resolve) {
		const char *slash = strrchr(index_path, '/');
		if (!slash)
			snprintf(rd.dir, sizeof(rd.dir), ".");
		else
			snprintf(rd.dir, sizeof(rd.dir), "%.*s", slash == index_path ? 1 : (int)(slash - index_path), index_path);
		resolve = resolve_in_dir;
		ud = &rd;
	}
	if (util_read_file(index_path, INDEX_MAX, &data, &len) < 0)
		return hm_fail(ctx, errno == ENOENT ? HM_ERR_NOT_FOUND : errno == EFBIG ? HM_ERR_BAD_INPUT : HM_ERR_IO,
			       "cannot read '%s': %s", index_path, errno == EFBIG ? "too big" : strerror(errno));
	root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
	free(data);
	if (!root)
		return hm_fail(ctx, HM_ERR_BAD_INPUT, "'%s' is not valid JSON: %s", index_path, je.text);
	set = calloc(1, sizeof(*set));
	if (!set) {
		json_decref(root);
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
	}
	set->total_size = -1;
	err = parse_index(ctx, index_path, root, resolve, ud, set);
	json_decref(root);
	if (err) {
		fmt_st_set_close(set);
		return err;
	}
	*out = set;
	return HM_OK;
}

enum hm_err fmt_st_open_dir(struct hm_ctx *ctx, const char *dir_or_index, struct fmt_st_set **out)
{
	struct stat st;
	char p[4096];
	*out = NULL;
	if (stat(dir_or_index, &st) < 0)
		return hm_fail(ctx, errno == ENOENT ? HM_ERR_NOT_FOUND : HM_ERR_IO, "cannot open '%s': %s", dir_or_index,
			       strerror(errno));
	if (!S_ISDIR(st.st_mode)) {
		size_t l = strlen(dir_or_index);
		if (l >= 11 && !strcmp(dir_or_index + l - 11, ".index.json"))
			return fmt_st_open_index(ctx, dir_or_index, NULL, NULL, out);
		return fmt_st_open_single(ctx, dir_or_index, out);
	}
	if ((size_t)snprintf(p, sizeof(p), "%s/model.safetensors.index.json", dir_or_index) >= sizeof(p))
		return hm_fail(ctx, HM_ERR_USAGE, "path '%s' is too long", dir_or_index);
	if (access(p, F_OK) == 0)
		return fmt_st_open_index(ctx, p, NULL, NULL, out);
	snprintf(p, sizeof(p), "%s/model.safetensors", dir_or_index);
	if (access(p, F_OK) == 0)
		return fmt_st_open_single(ctx, p, out);
	return hm_fail(ctx, HM_ERR_NOT_FOUND, "'%s' has no model.safetensors.index.json or model.safetensors",
		       dir_or_index);
}

size_t fmt_st_set_count(const struct fmt_st_set *set)
{
	return set->n;
}

const struct fmt_st_tensor *fmt_st_set_tensor(const struct fmt_st_set *set, size_t i)
{
	return i < set->n ? &set->t[i] : NULL;
}

const struct fmt_st_tensor *fmt_st_set_find(const struct fmt_st_set *set, const char *name)
{
	size_t lo = 0, hi = set->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, set->by_name[mid]->name);
		if (!c)
			return set->by_name[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

size_t fmt_st_set_nshards(const struct fmt_st_set *set)
{
	return set->nshards;
}

const struct fmt_st *fmt_st_set_shard(const struct fmt_st_set *set, size_t i)
{
	return i < set->nshards ? set->shards[i] : NULL;
}

const char *fmt_st_set_shard_name(const struct fmt_st_set *set, size_t i)
{
	return i < set->nshards ? set->names[i] : NULL;
}

int64_t fmt_st_set_total_size(const struct fmt_st_set *set)
{
	return set->total_size;
}
