/* inspect.c - `hubmirror inspect`: what a safetensors or GGUF checkpoint
 * holds (tensors, parameters, metadata), from a path or a stored repo. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cmd.h"
#include "../formats/formats.h"
#include "../mirror/mirror.h"
#include "../store/index.h"

#define TEXT_ROWS 50   /* tensors shown without --all */
#define ARRAY_HEAD 16  /* array items shown */

/* What the options of opts[] below set (a->o). */
struct inspect_vals {
	const char *revision, *repo_type;
	int all;
};

static const struct cmd_opt opts[] = {
	CMD_OPT_STR(struct inspect_vals, revision, "revision", 'r', "REV", "which revision of REPO (default main, else the latest)"),
	CMD_OPT_STR(struct inspect_vals, repo_type, "repo-type", 't', "TYPE", "model (default) or dataset"),
	CMD_OPT_FLAG(struct inspect_vals, all, "all", 'a', "list every tensor (text output shows the first 50)"),
	CMD_OPT_END,
};

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

static json_t *shape_json(const uint64_t *s, int n)
{
	json_t *a = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(a, json_integer((json_int_t)s[i]));
	return a;
}

/* A string that may not be UTF-8: invalid bytes become \xNN. */
static json_t *bytes_json(const char *s, size_t n)
{
	json_t *j = json_stringn(s, n);
	struct util_buf b = UTIL_BUF_INIT;
	if (j)
		return j;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		int r = c >= 0x20 && c < 0x7f ? util_buf_add(&b, &s[i], 1) : util_buf_printf(&b, "\\x%02x", c);
		if (r < 0)
			break;
	}
	j = json_string(b.buf ? b.buf : "");
	util_buf_release(&b);
	return j;
}

static json_t *number_json(double f)
{
	if (isnan(f))
		return json_string("nan");
	if (isinf(f))
		return json_string(f > 0 ? "inf" : "-inf");
	return json_real(f);
}

static json_t *gguf_value_json(const struct fmt_gguf_value *v)
{
	switch (v->type) {
	case FMT_GGUF_BOOL: return json_boolean(v->u);
	case FMT_GGUF_U8: case FMT_GGUF_U16: case FMT_GGUF_U32: case FMT_GGUF_U64:
		if (v->u > INT64_MAX) {
			char buf[32];
			snprintf(buf, sizeof(buf), "%" PRIu64, v->u);
			return json_string(buf);
		}
		return json_integer((json_int_t)v->u);
	case FMT_GGUF_I8: case FMT_GGUF_I16: case FMT_GGUF_I32: case FMT_GGUF_I64:
		return json_integer((json_int_t)v->i);
	case FMT_GGUF_F32: case FMT_GGUF_F64: return number_json(v->f);
	case FMT_GGUF_STRING: return bytes_json(v->str, (size_t)v->len);
	case FMT_GGUF_ARRAY: {
		json_t *items = json_array();
		struct fmt_gguf_iter it;
		struct fmt_gguf_value e;
		fmt_gguf_iter_init(&it, v);
		for (int i = 0; i < ARRAY_HEAD && fmt_gguf_iter_next(&it, &e); i++)
			json_array_append_new(items, gguf_value_json(&e));
		return json_pack("{s:s, s:s, s:I, s:o}", "type", "array", "item_type", fmt_gguf_vtype_name(v->elem),
				 "count", (json_int_t)v->count, "items", items);
	}
	default: return json_null();
	}
}

/* single: the file name to report for a set of one file opened directly
 * (its path may be a blob's); NULL for sets from an index. */
static json_t *st_report(const struct fmt_st_set *set, const char *label, const char *single)
{
	json_t *tensors = json_array(), *meta = json_object(), *files = json_array();
	uint64_t params = 0, bytes = 0;
	for (size_t i = 0; i < fmt_st_set_count(set); i++) {
		const struct fmt_st_tensor *t = fmt_st_set_tensor(set, i);
		params += t->nelem;
		bytes += t->nbytes;
		json_array_append_new(tensors, json_pack("{s:s, s:s, s:o, s:I, s:I, s:s}", "name", t->name, "dtype",
							 fmt_dtype_name(t->dtype), "shape", shape_json(t->shape, t->ndim),
							 "bytes", (json_int_t)t->nbytes, "offset", (json_int_t)t->file_offset,
							 "file", single ? single : fmt_st_set_shard_name(set, t->shard)));
	}
	for (size_t s = 0; s < fmt_st_set_nshards(set); s++) {
		const struct fmt_st *st = fmt_st_set_shard(set, s);
		json_array_append_new(files, json_string(single ? single : fmt_st_set_shard_name(set, s)));
		for (size_t i = 0; i < fmt_st_meta_count(st); i++) {
			const char *k, *v;
			fmt_st_meta(st, i, &k, &v);
			json_object_set_new(meta, k, json_string(v));
		}
	}
	return json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:o, s:o}", "path", label, "format", "safetensors", "files",
			 files, "tensor_count", (json_int_t)fmt_st_set_count(set), "parameter_count", (json_int_t)params,
			 "total_bytes", (json_int_t)bytes, "metadata", meta, "tensors", tensors);
}

static json_t *gguf_report(const struct fmt_gguf *g, const char *label)
{
	json_t *tensors = json_array(), *meta = json_object();
	uint64_t params = 0, bytes = 0;
	for (size_t i = 0; i < fmt_gguf_tensor_count(g); i++) {
		const struct fmt_gguf_tensor *t = fmt_gguf_tensor(g, i);
		params += t->nelem;
		bytes += t->nbytes;
		json_array_append_new(tensors, json_pack("{s:s, s:s, s:o, s:I, s:I}", "name", t->name, "dtype",
							 fmt_ggml_type_name(t->type), "shape", shape_json(t->ne, t->ndim),
							 "bytes", (json_int_t)t->nbytes, "offset",
							 (json_int_t)(fmt_gguf_data_offset(g) + t->offset)));
	}
	for (size_t i = 0; i < fmt_gguf_kv_count(g); i++) {
		const struct fmt_gguf_kv *kv = fmt_gguf_kv(g, i);
		json_t *v = gguf_value_json(&kv->v);
		if (kv->v.type != FMT_GGUF_ARRAY)
			v = json_pack("{s:s, s:o}", "type", fmt_gguf_vtype_name(kv->v.type), "value", v);
		json_object_set_new(meta, kv->key, v);
	}
	return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", "path", label, "format", "gguf",
			 "version", (json_int_t)fmt_gguf_version(g), "alignment", (json_int_t)fmt_gguf_alignment(g),
			 "data_offset", (json_int_t)fmt_gguf_data_offset(g), "tensor_count",
			 (json_int_t)fmt_gguf_tensor_count(g), "parameter_count", (json_int_t)params, "total_bytes",
			 (json_int_t)bytes, "metadata", meta, "tensors", tensors);
}

/* ---- text ---- */

/* Prints s with control bytes escaped (untrusted text on a terminal), cut
 * after max bytes. */
static void put_clean(const char *s, size_t max)
{
	size_t i;
	for (i = 0; s[i] && i < max; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\n')
			fputs("\\n", stdout);
		else if (c < 0x20 || c == 0x7f)
			printf("\\x%02x", c);
		else
			putchar(c);
	}
	if (s[i])
		fputs("...", stdout);
}

static void print_scalar(json_t *v)
{
	if (json_is_string(v)) {
		putchar('"');
		put_clean(json_string_value(v), 120);
		putchar('"');
	}
	else if (json_is_integer(v))
		printf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
	else if (json_is_real(v))
		printf("%g", json_real_value(v));
	else if (json_is_boolean(v))
		printf("%s", json_is_true(v) ? "true" : "false");
	else if (json_is_object(v))
		printf("array[%s] of %" JSON_INTEGER_FORMAT, json_string_value(json_object_get(v, "item_type")),
		       json_integer_value(json_object_get(v, "count")));
}

static void print_meta(json_t *meta, const char *format)
{
	const char *k;
	json_t *v;
	if (!json_object_size(meta))
		return;
	printf("metadata:\n");
	json_object_foreach(meta, k, v) {
		printf("  ");
		put_clean(k, 200);
		if (!strcmp(format, "safetensors")) {
			printf(" = ");
			put_clean(json_string_value(v), 200);
			printf("\n");
			continue;
		}
		if (json_is_string(json_object_get(v, "item_type"))) {
			json_t *items = json_object_get(v, "items"), *e;
			size_t i, shown = 0;
			printf(": ");
			print_scalar(v);
			printf(" [");
			json_array_foreach(items, i, e) {
				if (i == 5)
					break;
				printf("%s", i ? ", " : "");
				print_scalar(e);
				shown++;
			}
			printf("%s]\n", (json_int_t)shown < json_integer_value(json_object_get(v, "count")) ? ", ..." : "");
		} else {
			printf(" (%s) = ", json_string_value(json_object_get(v, "type")));
			print_scalar(json_object_get(v, "value"));
			printf("\n");
		}
	}
}

static void shape_text(json_t *shape, char *buf, size_t len)
{
	size_t l = (size_t)snprintf(buf, len, "[");
	json_t *d;
	size_t i;
	json_array_foreach(shape, i, d) {
		if (l < len)
			l += (size_t)snprintf(buf + l, len - l, "%s%" JSON_INTEGER_FORMAT, i ? ", " : "", json_integer_value(d));
	}
	if (l < len)
		snprintf(buf + l, len - l, "]");
}

static void print_report(json_t *r, int all)
{
	json_t *tensors = json_object_get(r, "tensors"), *t;
	const char *format = json_string_value(json_object_get(r, "format"));
	size_t i, w = 4, rows = json_array_size(tensors);
	char h[32];
	printf("%s: %s", json_string_value(json_object_get(r, "path")), format);
	if (json_object_get(r, "version"))
		printf(" v%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(r, "version")));
	if (json_array_size(json_object_get(r, "files")) > 1)
		printf(", %zu shards", json_array_size(json_object_get(r, "files")));
	printf(", %zu tensors, %" JSON_INTEGER_FORMAT " parameters, %s\n", rows,
	       json_integer_value(json_object_get(r, "parameter_count")),
	       util_human_size((uint64_t)json_integer_value(json_object_get(r, "total_bytes")), h, sizeof(h)));
	print_meta(json_object_get(r, "metadata"), format);
	if (!all && rows > TEXT_ROWS)
		rows = TEXT_ROWS;
	for (i = 0; i < rows; i++) {
		size_t l = strlen(json_string_value(json_object_get(json_array_get(tensors, i), "name")));
		w = l > w ? l : w;
	}
	if (w > 72)
		w = 72;
	printf("%-*s  %-7s  %s\n", (int)w, "NAME", "DTYPE", !strcmp(format, "gguf") ? "SHAPE (ggml order)" : "SHAPE");
	json_array_foreach(tensors, i, t) {
		const char *name = json_string_value(json_object_get(t, "name"));
		char sh[256];
		if (i == rows)
			break;
		shape_text(json_object_get(t, "shape"), sh, sizeof(sh));
		put_clean(name, 4096);
		printf("%*s  %-7s  %s\n", (int)(w > strlen(name) ? w - strlen(name) : 0), "",
		       json_string_value(json_object_get(t, "dtype")), sh);
	}
	if (rows < json_array_size(tensors))
		printf("... %zu more tensors (--all lists them)\n", json_array_size(tensors) - rows);
}

/* ---- sources ---- */

static int is_gguf(const char *path)
{
	char m[4];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, m, 4) : -1;
	if (fd >= 0)
		close(fd);
	return n == 4 && !memcmp(m, "GGUF", 4);
}

/* Opens one checkpoint at path (a file or directory) into *out. */
/* A safetensors file starts with an 8-byte little-endian header length
 * that fits the file, then '{'. */
static int looks_safetensors(const char *path, const struct stat *st)
{
	unsigned char b[9];
	uint64_t n = 0;
	FILE *f = fopen(path, "rb");
	size_t got = f ? fread(b, 1, sizeof(b), f) : 0;
	if (f)
		fclose(f);
	if (got < sizeof(b))
		return 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | b[i];
	return n >= 2 && n <= (uint64_t)st->st_size - 8 && b[8] == '{';
}

static enum hm_err report_path(struct hm_ctx *ctx, const char *path, const char *label, json_t **out)
{
	struct stat st;
	enum hm_err err;
	*out = NULL;
	if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode) && (ends_with(path, ".gguf") || is_gguf(path))) {
		struct fmt_gguf *g = NULL;
		if ((err = fmt_gguf_open(ctx, path, &g)))
			return err;
		*out = gguf_report(g, label);
		fmt_gguf_close(g);
	} else {
		struct fmt_st_set *set = NULL;
		const char *base = strrchr(label, '/');
		/* a file named .safetensors gets the reader's own diagnosis */
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && !ends_with(path, ".json") &&
		    !ends_with(path, ".safetensors") && !looks_safetensors(path, &st))
			return hm_fail(ctx, HM_ERR_BAD_INPUT,
				       "'%s' is neither a safetensors nor a GGUF file (inspect reads .safetensors, .gguf, "
				       "a model.safetensors.index.json or a model directory)", label);
		int direct = stat(path, &st) == 0 && S_ISREG(st.st_mode) && !ends_with(path, ".index.json");
		if ((err = fmt_st_open_dir(ctx, path, &set)))
			return err;
		*out = st_report(set, label, direct ? (base ? base + 1 : label) : NULL);
		fmt_st_set_close(set);
	}
	return *out ? HM_OK : hm_fail(ctx, HM_ERR_NOMEM, "out of memory");
}

struct repo_files {
	struct store *st;
	struct store_file *f;
	size_t n;
	const char *dir; /* the index's directory in the repo ("" for the root) */
	char *used;      /* files covered by an index */
};

static long find_file(const struct repo_files *rf, const char *path)
{
	for (size_t i = 0; i < rf->n; i++)
		if (!strcmp(rf->f[i].path, path))
			return (long)i;
	return -1;
}

static enum hm_err resolve_shard(struct hm_ctx *ctx, void *ud, const char *shard, char *buf, size_t len)
{
	struct repo_files *rf = ud;
	char p[4096];
	long i;
	snprintf(p, sizeof(p), "%s%s%s", rf->dir, *rf->dir ? "/" : "", shard);
	if ((i = find_file(rf, p)) < 0)
		return hm_fail(ctx, HM_ERR_NOT_FOUND, "shard '%s' is not in the revision", p);
	rf->used[i] = 1;
	store_blob_path(rf->st, rf->f[i].sha256, buf, len);
	return HM_OK;
}

/* Error messages name blobs; say which repo file each is instead. */
static void name_files(struct hm_ctx *ctx, const struct repo_files *rf)
{
	for (size_t i = 0; i < rf->n; i++) {
		char blob[4096], msg[sizeof(ctx->errmsg)];
		char *at;
		store_blob_path(rf->st, rf->f[i].sha256, blob, sizeof(blob));
		while ((at = strstr(ctx->errmsg, blob))) {
			snprintf(msg, sizeof(msg), "%.*s%s%s", (int)(at - ctx->errmsg), ctx->errmsg, rf->f[i].path,
				 at + strlen(blob));
			memcpy(ctx->errmsg, msg, sizeof(msg));
		}
	}
}

static enum hm_err report_repo(struct hm_ctx *ctx, struct repo_files *rf, json_t *list)
{
	enum hm_err err = HM_OK;
	char blob[4096];
	/* sharded checkpoints first: their shards are not reported again */
	for (size_t i = 0; i < rf->n && !err; i++) {
		struct fmt_st_set *set = NULL;
		char dir[4096];
		const char *slash = strrchr(rf->f[i].path, '/');
		if (!ends_with(rf->f[i].path, ".safetensors.index.json"))
			continue;
		snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - rf->f[i].path) : 0, rf->f[i].path);
		rf->dir = dir;
		store_blob_path(rf->st, rf->f[i].sha256, blob, sizeof(blob));
		if (!(err = fmt_st_open_index(ctx, blob, resolve_shard, rf, &set))) {
			json_array_append_new(list, st_report(set, rf->f[i].path, NULL));
			fmt_st_set_close(set);
		}
	}
	for (size_t i = 0; i < rf->n && !err; i++) {
		json_t *r = NULL;
		if (rf->used[i] || !(ends_with(rf->f[i].path, ".safetensors") || ends_with(rf->f[i].path, ".gguf")))
			continue;
		store_blob_path(rf->st, rf->f[i].sha256, blob, sizeof(blob));
		if (!(err = report_path(ctx, blob, rf->f[i].path, &r)))
			json_array_append_new(list, r);
	}
	if (err)
		name_files(ctx, rf);
	return err;
}

static int inspect_repo(struct cmd_env *env, struct cmd_args *a)
{
	const struct inspect_vals *opt = a->o;
	struct repo_files rf = {0};
	char buf[256], commit[41];
	const char *type, *repo;
	json_t *list = json_array();
	enum hm_err err;
	int rc = 1;

	if ((err = mirror_parse_repo(&env->ctx, a->pos[0], opt->repo_type, buf, sizeof(buf), &type, &repo)) ||
	    (err = cmd_open_store_mode(env, STORE_READ, &rf.st)))
		goto out;
	err = store_resolve(&env->ctx, rf.st, type, repo, opt->revision, commit);
	if (err == HM_ERR_NOT_FOUND) {
		if (!env->ctx.errmsg[0])
			hm_fail(&env->ctx, err, "'%s' not found in the store", repo);
		cmd_hint_type(env, rf.st, type, repo);
	}
	if (err || (err = store_list_files(&env->ctx, rf.st, type, repo, commit, &rf.f, &rf.n)))
		goto out;
	if (!(rf.used = calloc(rf.n + 1, 1))) {
		err = hm_fail(&env->ctx, HM_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((err = report_repo(&env->ctx, &rf, list)))
		goto out;
	if (!json_array_size(list)) {
		err = hm_fail(&env->ctx, HM_ERR_NOT_FOUND, "'%s' has no .safetensors or .gguf files at %.12s", repo, commit);
		goto out;
	}
	if (env->json) {
		cmd_print_json(json_pack("{s:s, s:s, s:s, s:O}", "repo", repo, "repo_type", type, "revision", commit,
					 "checkpoints", list));
	} else {
		json_t *r;
		size_t i;
		printf("%s %s at %.12s\n", type, repo, commit);
		json_array_foreach(list, i, r) {
			printf("\n");
			print_report(r, opt->all);
		}
	}
	rc = 0;
out:
	if (err)
		rc = cmd_error(env, err);
	json_decref(list);
	free(rf.used);
	store_files_free(rf.f, rf.n);
	store_close(rf.st);
	return rc;
}

static int run(struct cmd_env *env, struct cmd_args *a)
{
	const struct inspect_vals *opt = a->o;
	struct stat st;
	json_t *r = NULL;
	enum hm_err err;
	if (a->npos != 1)
		return cmd_usage_error(&cmd_inspect, "inspect takes one PATH or REPO");
	if (stat(a->pos[0], &st) != 0) {
		if (errno == ENOENT && !ends_with(a->pos[0], ".safetensors") && !ends_with(a->pos[0], ".gguf") &&
		    !ends_with(a->pos[0], ".json") && util_repo_id_is_valid(strchr(a->pos[0], ':') ? strchr(a->pos[0], ':') + 1
							  : !strncmp(a->pos[0], "datasets/", 9) ? a->pos[0] + 9
							  : a->pos[0]))
			return inspect_repo(env, a);
		hm_fail(&env->ctx, HM_ERR_NOT_FOUND, "cannot open '%s': %s", a->pos[0], strerror(errno));
		return cmd_error(env, HM_ERR_NOT_FOUND);
	}
	if ((err = report_path(&env->ctx, a->pos[0], a->pos[0], &r)))
		return cmd_error(env, err);
	if (env->json)
		cmd_print_json(r);
	else {
		print_report(r, opt->all);
		json_decref(r);
	}
	return 0;
}

const struct cmd cmd_inspect = {
	"inspect", "PATH|REPO [--revision REV] [--all]",
	"Show the tensors, parameter count and metadata of a safetensors or GGUF checkpoint.",
	"PATH is a .safetensors or .gguf file, a model.safetensors.index.json, or a\n"
	"directory holding one (or model.safetensors). REPO is a stored repository:\n"
	"every checkpoint of the revision is shown (shards joined through their index).\n"
	"GGUF shapes are in ggml order (ne0 first); safetensors shapes in PyTorch order.\n"
	"--json prints everything: per tensor name, dtype, shape, bytes, offset; metadata\n"
	"values with their types (arrays as type, count and the first 16 items).\n"
	"A malformed file is an error (exit 1) naming the file and the problem.",
	opts, sizeof(struct inspect_vals), run,
};
