/* statcache.c - the statistics cache (schema v6): the rows of downloads and
 * served packed into chunks of integer columns, and their dictionaries.
 *
 * A chunk holds the rows with ids in (first_id, last_id] of one table,
 * STORE_SC_CHUNK of them, as they were when it was built; the triggers of
 * schema v6 drop every chunk from the first id an insert, update or delete
 * touches, so within any snapshot the chunks of a table cover a prefix of
 * its ids exactly as the table holds them. A report reads the chunks and
 * the ids after them (fewer than a chunk, normally) from the table itself.
 * Chunks are built by whoever writes rows (store_flush, store_record_served)
 * and by a report that finds a chunk's worth unpacked (after a migration or
 * a bulk insert); building is best effort, a report never depends on it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "store-int.h"
#include "../util/util.h"

/* chunks a write transaction builds, so that other writers wait no longer
 * than a few tens of milliseconds while a large history is packed */
#define SC_BATCH 8
#define SC_MAGIC "HMS1"

static const char *const tables[2] = {"downloads", "served"};

/* The unpacked rows of each table (bound ?1: after this id, ?2: up to this one). */
static const char *const rows_sql[2] = {
	"SELECT id, started_at, bytes, seconds, retries, result = 'failed', 0, 0, 0, 0,"
	" repo_type, repo, path, endpoint, " /* the same predicate for both: */
	" typeof(started_at) = 'integer' AND typeof(repo_type) IN ('text', 'null')"
	" AND typeof(repo) IN ('text', 'null')"
	" FROM downloads WHERE id > ?1 AND id <= ?2 ORDER BY id",
	"SELECT id, started_at, bytes, seconds, 0, status, cache = 'hit', cache = 'miss', kind = 'file',"
	" method = 'GET', repo_type, repo, path, client,"
	" typeof(started_at) = 'integer' AND typeof(repo_type) IN ('text', 'null')"
	" AND typeof(repo) IN ('text', 'null')"
	" FROM served WHERE id > ?1 AND id <= ?2 ORDER BY id",
};

/* ---- the chunk format ----
 * "HMS1", n (u32), then columns of n values, little-endian: started_at
 * (i64), bytes (u64, negative read as 0), seconds (f64, negative as 0),
 * retries (u32), repo, file and peer ids (u32), flags (u8). */

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

int store_sc_decode(const void *blob, size_t len, struct store_sc_chunk *c)
{
	const unsigned char *p = blob;
	uint32_t n;

	if (!p || len < 8 || memcmp(p, SC_MAGIC, 4))
		return -1;
	n = store_sc_u32(p + 4, 0);
	if (n == 0 || n > STORE_SC_CHUNK || len != 8 + (size_t)n * STORE_SC_ROW)
		return -1;
	c->n = n;
	c->t = p + 8;
	c->bytes = c->t + 8 * (size_t)n;
	c->seconds = c->bytes + 8 * (size_t)n;
	c->retries = c->seconds + 8 * (size_t)n;
	c->repo = c->retries + 4 * (size_t)n;
	c->file = c->repo + 4 * (size_t)n;
	c->peer = c->file + 4 * (size_t)n;
	c->flags = c->peer + 4 * (size_t)n;
	return 0;
}

/* ---- dictionaries as a report reads them ---- */

static int dict_text(struct store_sc_dict *d, sqlite3_stmt *q, int col, struct store_sc_str *s)
{
	const void *b = sqlite3_column_blob(q, col);
	size_t n = (size_t)sqlite3_column_bytes(q, col);
	s->null = sqlite3_column_type(q, col) == SQLITE_NULL;
	s->len = n;
	s->off = d->len;
	if (d->len + n + 1 > d->cap) {
		size_t nc = (d->len + n + 1) * 2;
		char *t = realloc(d->text, nc);
		if (!t)
			return -1;
		d->text = t;
		d->cap = nc;
	}
	if (n)
		memcpy(d->text + d->len, b, n);
	d->text[d->len + n] = '\0';
	d->len += n + 1;
	return 0;
}

/* Loads one dictionary: ids go from 1 to *n - 1; ids with no row are absent. */
static enum hm_err dict_load(struct hm_ctx *ctx, sqlite3 *db, struct store_sc_dict *d, const char *sql,
			     size_t *n, unsigned char **present, struct store_sc_str **a, struct store_sc_str **b,
			     uint32_t **num)
{
	sqlite3_stmt *q = NULL;
	char max_sql[96];
	int64_t max = 0;
	int rc;

	snprintf(max_sql, sizeof(max_sql), "SELECT coalesce(max(id), 0) FROM %s", sql);
	if (sqlite3_prepare_v2(db, max_sql, -1, &q, NULL) != SQLITE_OK || sqlite3_step(q) != SQLITE_ROW)
		goto dberr;
	max = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	q = NULL;
	if (max < 0 || max >= UINT32_MAX - 1)
		return hm_fail(ctx, HM_ERR_DB, "cannot read statistics: the dictionary %s is too large", sql);
	*n = (size_t)max + 1;
	if (!(*present = calloc(*n, 1)) || !(*a = calloc(*n, sizeof(**a))) || (b && !(*b = calloc(*n, sizeof(**b)))) ||
	    (num && !(*num = calloc(*n, sizeof(**num)))))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory reading statistics");
	snprintf(max_sql, sizeof(max_sql), "SELECT * FROM %s", sql);
	if (sqlite3_prepare_v2(db, max_sql, -1, &q, NULL) != SQLITE_OK)
		goto dberr;
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(q, 0);
		if (id <= 0 || id > max)
			continue;
		(*present)[id] = 1;
		if (num) { /* stats_files: id, repo, path */
			int64_t r = sqlite3_column_int64(q, 1);
			(*num)[id] = r > 0 && r < UINT32_MAX ? (uint32_t)r : 0;
			if (dict_text(d, q, 2, &(*a)[id]))
				goto nomem;
		} else if (dict_text(d, q, 1, &(*a)[id]) || (b && dict_text(d, q, 2, &(*b)[id]))) {
			goto nomem;
		}
	}
	if (rc != SQLITE_DONE)
		goto dberr;
	sqlite3_finalize(q);
	return HM_OK;
nomem:
	sqlite3_finalize(q);
	return hm_fail(ctx, HM_ERR_NOMEM, "out of memory reading statistics");
dberr:
	sqlite3_finalize(q);
	return hm_fail(ctx, HM_ERR_DB, "cannot read statistics: %s", sqlite3_errmsg(db));
}

enum hm_err store_sc_dict_load(struct hm_ctx *ctx, sqlite3 *db, int files, int peers, struct store_sc_dict *d)
{
	enum hm_err err;
	memset(d, 0, sizeof(*d));
	if ((err = dict_load(ctx, db, d, "stats_repos", &d->nrepo, &d->has_repo, &d->rtype, &d->rname, NULL)))
		return err;
	if (files && (err = dict_load(ctx, db, d, "stats_files", &d->nfile, &d->has_file, &d->fpath, NULL,
				      &d->frepo)))
		return err;
	if (peers && (err = dict_load(ctx, db, d, "stats_peers", &d->npeer, &d->has_peer, &d->peer, NULL, NULL)))
		return err;
	return HM_OK;
}

void store_sc_dict_release(struct store_sc_dict *d)
{
	free(d->has_repo);
	free(d->has_file);
	free(d->has_peer);
	free(d->rtype);
	free(d->rname);
	free(d->fpath);
	free(d->frepo);
	free(d->peer);
	free(d->text);
	memset(d, 0, sizeof(*d));
}

/* ---- building chunks ---- */

/* One dictionary while building: key bytes -> id. */
struct bdict {
	struct store_kmap keys;
	int64_t *ids;       /* per key index */
	size_t cap;
	sqlite3_stmt *ins;
};

struct store_sc_builder {
	struct store *st;
	struct bdict repos, files, peers;
	int64_t seen[3];     /* max(id) of each dictionary as loaded and added to in
				the last transaction that committed; -1: not loaded */
	struct util_buf key;
	unsigned char *blob;
	sqlite3_stmt *next[2], *rows[2], *ins_chunk;
};

static int bdict_put(struct bdict *b, const char *k, size_t n, int64_t id)
{
	int added;
	int64_t i = store_kmap_get(&b->keys, k, n, &added);
	if (i < 0)
		return -1;
	if ((size_t)i >= b->cap) {
		size_t nc = b->cap ? b->cap * 2 : 256;
		void *p = realloc(b->ids, nc * sizeof(*b->ids));
		if (!p)
			return -1;
		b->ids = p;
		b->cap = nc;
	}
	b->ids[i] = id;
	return 0;
}

static void bdict_release(struct bdict *b)
{
	store_kmap_release(&b->keys);
	free(b->ids);
	sqlite3_finalize(b->ins);
	memset(b, 0, sizeof(*b));
}

/* The builder's key of a repo: which of type and name are NULL, the length
 * of the type, both (a repo filter tells NULL from ""). */
static int repo_key(struct util_buf *k, const void *type, size_t lt, int tnull, const void *name, size_t ln,
		    int nnull)
{
	unsigned char head[5];
	head[0] = (unsigned char)((tnull ? 1 : 0) | (nnull ? 2 : 0));
	put32(head + 1, (uint32_t)lt);
	k->len = 0;
	return util_buf_add(k, head, sizeof(head)) || util_buf_add(k, type, lt) || util_buf_add(k, name, ln) ? -1 : 0;
}

static int file_key(struct util_buf *k, int64_t repo, const void *path, size_t lp)
{
	unsigned char head[8];
	put64(head, (uint64_t)repo);
	k->len = 0;
	return util_buf_add(k, head, sizeof(head)) || util_buf_add(k, path, lp) ? -1 : 0;
}

static const char *const dict_tables[3] = {"stats_repos", "stats_files", "stats_peers"};

/* max(id) of each dictionary. */
static enum hm_err dict_sizes(struct hm_ctx *ctx, struct store_sc_builder *b, int64_t v[3])
{
	enum hm_err err = HM_OK;
	for (int i = 0; i < 3 && !err; i++) {
		sqlite3_stmt *q = NULL;
		char sql[96];
		snprintf(sql, sizeof(sql), "SELECT coalesce(max(id), 0) FROM %s", dict_tables[i]);
		if ((err = store_prepare(ctx, b->st, sql, &q)))
			break;
		if (sqlite3_step(q) == SQLITE_ROW)
			v[i] = sqlite3_column_int64(q, 0);
		else
			err = store_db_fail(ctx, b->st, "read the statistics dictionaries");
		sqlite3_finalize(q);
	}
	return err;
}

/* Reads the dictionaries into b, unless they are as b left them: only
 * packers write them, adding rows, so a larger max(id) is another packer's
 * work (a dictionary entry someone deleted can only make a report read
 * that chunk's ids from the table). */
static enum hm_err builder_load(struct hm_ctx *ctx, struct store_sc_builder *b)
{
	static const char *const sql[3] = {"SELECT id, type, name FROM stats_repos",
					   "SELECT id, repo, path FROM stats_files", "SELECT id, key FROM stats_peers"};
	struct bdict *d[3] = {&b->repos, &b->files, &b->peers};
	int64_t now[3];
	enum hm_err err;

	if ((err = dict_sizes(ctx, b, now)))
		return err;
	for (int i = 0; i < 3 && !err; i++) {
		sqlite3_stmt *q = NULL;
		int rc;
		if (b->seen[i] == now[i])
			continue;
		b->seen[i] = -1;
		store_kmap_release(&d[i]->keys);
		if ((err = store_prepare(ctx, b->st, sql[i], &q)))
			break;
		while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
			int r;
			if (i == 0)
				r = repo_key(&b->key, sqlite3_column_blob(q, 1), (size_t)sqlite3_column_bytes(q, 1),
					     sqlite3_column_type(q, 1) == SQLITE_NULL, sqlite3_column_blob(q, 2),
					     (size_t)sqlite3_column_bytes(q, 2), sqlite3_column_type(q, 2) == SQLITE_NULL);
			else if (i == 1)
				r = file_key(&b->key, sqlite3_column_int64(q, 1), sqlite3_column_blob(q, 2),
					     (size_t)sqlite3_column_bytes(q, 2));
			else
				r = (b->key.len = 0, util_buf_add(&b->key, sqlite3_column_blob(q, 1),
								  (size_t)sqlite3_column_bytes(q, 1)));
			if (r || bdict_put(d[i], b->key.buf ? b->key.buf : "", b->key.len, sqlite3_column_int64(q, 0))) {
				err = hm_fail(ctx, HM_ERR_NOMEM, "out of memory building the statistics cache");
				break;
			}
		}
		if (!err && rc != SQLITE_DONE)
			err = store_db_fail(ctx, b->st, "read the statistics dictionaries");
		sqlite3_finalize(q);
	}
	return err;
}

/* Forgets the dictionaries (after a rollback: keys added in it are gone). */
static void builder_forget(struct store_sc_builder *b)
{
	store_kmap_release(&b->repos.keys);
	store_kmap_release(&b->files.keys);
	store_kmap_release(&b->peers.keys);
	memset(b->seen, 0xff, sizeof(b->seen));
}

/* Looks up b->key in d: *i its index, *added 1 when new (the caller then
 * binds d->ins and calls bdict_insert). */
static enum hm_err bdict_find(struct hm_ctx *ctx, struct store_sc_builder *b, struct bdict *d, int64_t *i, int *added)
{
	*i = store_kmap_get(&d->keys, b->key.buf ? b->key.buf : "", b->key.len, added);
	return *i < 0 ? hm_fail(ctx, HM_ERR_NOMEM, "out of memory building the statistics cache") : HM_OK;
}

/* Inserts the new key i of d (d->ins bound) and records its id. */
static enum hm_err bdict_insert(struct hm_ctx *ctx, struct store_sc_builder *b, struct bdict *d, int64_t i)
{
	int rc = sqlite3_step(d->ins);
	sqlite3_reset(d->ins);
	sqlite3_clear_bindings(d->ins);
	if (rc != SQLITE_DONE)
		return store_db_fail(ctx, b->st, "add to the statistics dictionaries");
	if (bdict_put(d, d->keys.keys[i].k, d->keys.keys[i].len, sqlite3_last_insert_rowid(b->st->db)))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory building the statistics cache");
	return HM_OK;
}

static enum hm_err bdict_id(struct hm_ctx *ctx, struct bdict *d, int64_t i, uint32_t *id)
{
	int64_t v = d->ids[i];
	if (v <= 0 || v >= UINT32_MAX)
		return hm_fail(ctx, HM_ERR_DB, "the statistics dictionaries are full");
	*id = (uint32_t)v;
	return HM_OK;
}

/* Binds n bytes at p as a blob; "" stays "" (a NULL pointer would bind NULL). */
static void bind_bytes(sqlite3_stmt *q, int i, const void *p, size_t n)
{
	sqlite3_bind_blob(q, i, p ? p : "", (int)n, SQLITE_TRANSIENT);
}

static void bind_blob_or_null(sqlite3_stmt *q, int i, sqlite3_stmt *from, int col)
{
	if (sqlite3_column_type(from, col) == SQLITE_NULL)
		sqlite3_bind_null(q, i);
	else
		bind_bytes(q, i, sqlite3_column_blob(from, col), (size_t)sqlite3_column_bytes(from, col));
}

static enum hm_err nomem(struct hm_ctx *ctx)
{
	return hm_fail(ctx, HM_ERR_NOMEM, "out of memory building the statistics cache");
}

/* The dictionary ids of row q of tbl (added to the dictionaries when new):
 * repo (type and name as stored), file, peer. */
static enum hm_err row_ids(struct hm_ctx *ctx, struct store_sc_builder *b, sqlite3_stmt *q, int tbl, uint32_t *rid,
			   uint32_t *fid, uint32_t *pid)
{
	const unsigned char *type = sqlite3_column_text(q, 10), *repo = sqlite3_column_text(q, 11);
	size_t lt = type ? (size_t)sqlite3_column_bytes(q, 10) : 0, lr = repo ? (size_t)sqlite3_column_bytes(q, 11) : 0;
	char src = tbl ? 's' : 'p';
	enum hm_err err;
	int64_t ki;
	int added;

	if (repo_key(&b->key, type, lt, !type, repo, lr, !repo))
		return nomem(ctx);
	if ((err = bdict_find(ctx, b, &b->repos, &ki, &added)))
		return err;
	if (added) {
		bind_blob_or_null(b->repos.ins, 1, q, 10);
		bind_blob_or_null(b->repos.ins, 2, q, 11);
		if ((err = bdict_insert(ctx, b, &b->repos, ki)))
			return err;
	}
	if ((err = bdict_id(ctx, &b->repos, ki, rid)))
		return err;
	if (file_key(&b->key, *rid, sqlite3_column_blob(q, 12), (size_t)sqlite3_column_bytes(q, 12)))
		return nomem(ctx);
	if ((err = bdict_find(ctx, b, &b->files, &ki, &added)))
		return err;
	if (added) {
		sqlite3_bind_int64(b->files.ins, 1, *rid);
		bind_bytes(b->files.ins, 2, b->key.buf + 8, b->key.len - 8);
		if ((err = bdict_insert(ctx, b, &b->files, ki)))
			return err;
	}
	if ((err = bdict_id(ctx, &b->files, ki, fid)))
		return err;
	b->key.len = 0;
	if (util_buf_add(&b->key, &src, 1) ||
	    util_buf_add(&b->key, sqlite3_column_blob(q, 13), (size_t)sqlite3_column_bytes(q, 13)))
		return nomem(ctx);
	if ((err = bdict_find(ctx, b, &b->peers, &ki, &added)))
		return err;
	if (added) {
		bind_bytes(b->peers.ins, 1, b->key.buf, b->key.len);
		if ((err = bdict_insert(ctx, b, &b->peers, ki)))
			return err;
	}
	if ((err = bdict_id(ctx, &b->peers, ki, pid)))
		return err;
	return HM_OK;
}

/* Packs the rows of tbl with ids in (first, last] (STORE_SC_CHUNK of them) as one chunk. */
static enum hm_err build_chunk(struct hm_ctx *ctx, struct store_sc_builder *b, int tbl, int64_t first, int64_t last)
{
	sqlite3_stmt *q = b->rows[tbl];
	unsigned char *p = b->blob;
	const size_t N = STORE_SC_CHUNK;
	int64_t min_t = INT64_MAX, max_t = INT64_MIN;
	enum hm_err err = HM_OK;
	size_t n = 0;
	int rc, plain = 1;

	sqlite3_reset(q);
	sqlite3_bind_int64(q, 1, first);
	sqlite3_bind_int64(q, 2, last);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		int64_t t = sqlite3_column_int64(q, 1), bytes = sqlite3_column_int64(q, 2);
		int64_t retries = sqlite3_column_int64(q, 4);
		double seconds = sqlite3_column_double(q, 3);
		const unsigned char *type = sqlite3_column_text(q, 10), *repo;
		size_t lt = type ? (size_t)sqlite3_column_bytes(q, 10) : 0, lr;
		unsigned flags = 0;
		uint32_t rid = 0, fid = 0, pid = 0;

		repo = sqlite3_column_text(q, 11);
		lr = repo ? (size_t)sqlite3_column_bytes(q, 11) : 0;
		if (n == N) {
			err = hm_fail(ctx, HM_ERR_DB, "more rows than expected building the statistics cache");
			goto out;
		}
		/* values the columns cannot hold as a report would read them:
		 * keep the chunk, without data (a report reads these ids from the table) */
		if (!sqlite3_column_int(q, 14) || retries > (int64_t)UINT32_MAX)
			plain = 0;
		if (tbl) {
			flags |= sqlite3_column_int(q, 5) >= 400 ? STORE_SC_FAILED : 0;
			flags |= sqlite3_column_int(q, 6) ? STORE_SC_HIT : 0;
			flags |= sqlite3_column_int(q, 7) ? STORE_SC_MISS : 0;
			flags |= sqlite3_column_int(q, 8) ? STORE_SC_FILE : 0;
			flags |= sqlite3_column_int(q, 9) ? STORE_SC_GET : 0;
		} else {
			flags |= sqlite3_column_int(q, 5) ? STORE_SC_FAILED : 0;
		}
		flags |= lt && lr ? STORE_SC_REPO : 0;

		if ((err = row_ids(ctx, b, q, tbl, &rid, &fid, &pid)))
			goto out;

		put64(p + 8 + 8 * n, (uint64_t)t);
		put64(p + 8 + 8 * (N + n), bytes > 0 ? (uint64_t)bytes : 0);
		{
			uint64_t bits;
			if (seconds < 0)
				seconds = 0;
			memcpy(&bits, &seconds, sizeof(bits));
			put64(p + 8 + 8 * (2 * N + n), bits);
		}
		put32(p + 8 + 24 * N + 4 * n, retries > 0 && retries <= (int64_t)UINT32_MAX ? (uint32_t)retries : 0);
		put32(p + 8 + 28 * N + 4 * n, rid);
		put32(p + 8 + 32 * N + 4 * n, fid);
		put32(p + 8 + 36 * N + 4 * n, pid);
		p[8 + 40 * N + n] = (unsigned char)flags;
		if (t < min_t)
			min_t = t;
		if (t > max_t)
			max_t = t;
		n++;
	}
	if (rc != SQLITE_DONE) {
		err = store_db_fail(ctx, b->st, "read rows for the statistics cache");
		goto out;
	}
	if (n != N) {
		err = hm_fail(ctx, HM_ERR_DB, "fewer rows than expected building the statistics cache");
		goto out;
	}
	memcpy(p, SC_MAGIC, 4);
	put32(p + 4, (uint32_t)n);
	q = b->ins_chunk;
	sqlite3_reset(q);
	sqlite3_bind_int(q, 1, tbl);
	sqlite3_bind_int64(q, 2, first);
	sqlite3_bind_int64(q, 3, last);
	if (plain) {
		sqlite3_bind_int64(q, 4, min_t);
		sqlite3_bind_int64(q, 5, max_t);
		sqlite3_bind_blob(q, 6, p, (int)(8 + N * STORE_SC_ROW), SQLITE_STATIC);
	} else {
		sqlite3_bind_null(q, 4);
		sqlite3_bind_null(q, 5);
		sqlite3_bind_null(q, 6);
	}
	if (sqlite3_step(q) != SQLITE_DONE)
		err = store_db_fail(ctx, b->st, "store a statistics chunk");
	sqlite3_reset(q);
out:
	sqlite3_reset(b->rows[tbl]);
	return err;
}

/* *first: the last id packed of tbl; *last: the id that would end the next
 * chunk, 0 when fewer than a chunk's rows wait. */
static enum hm_err next_chunk(struct hm_ctx *ctx, struct store_sc_builder *b, int tbl, int64_t *first, int64_t *last)
{
	sqlite3_stmt *q = b->next[tbl];
	int rc;
	*first = *last = 0;
	sqlite3_reset(q);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		*first = sqlite3_column_int64(q, 0);
		if (sqlite3_column_type(q, 1) != SQLITE_NULL)
			*last = sqlite3_column_int64(q, 1);
	}
	sqlite3_reset(q);
	return rc == SQLITE_ROW ? HM_OK : store_db_fail(ctx, b->st, "look for rows to pack");
}

static enum hm_err builder_init(struct hm_ctx *ctx, struct store *st, struct store_sc_builder *b)
{
	enum hm_err err;
	char sql[320];

	memset(b, 0, sizeof(*b));
	b->st = st;
	memset(b->seen, 0xff, sizeof(b->seen));
	for (int t = 0; t < 2; t++) {
		/* the packed prefix, and the id of the STORE_SC_CHUNK-th row after it */
		snprintf(sql, sizeof(sql), "SELECT p, (SELECT id FROM %s WHERE id > p ORDER BY id LIMIT 1 OFFSET %d)"
			 " FROM (SELECT coalesce(max(last_id), 0) AS p FROM stats_chunks WHERE tbl = %d)",
			 tables[t], STORE_SC_CHUNK - 1, t);
		if ((err = store_prepare(ctx, st, sql, &b->next[t])) ||
		    (err = store_prepare(ctx, st, rows_sql[t], &b->rows[t])))
			return err;
	}
	if ((err = store_prepare(ctx, st, "INSERT INTO stats_chunks(tbl, first_id, last_id, min_t, max_t, data)"
				 " VALUES (?1, ?2, ?3, ?4, ?5, ?6)", &b->ins_chunk)) ||
	    (err = store_prepare(ctx, st, "INSERT INTO stats_repos(type, name) VALUES (?1, ?2)", &b->repos.ins)) ||
	    (err = store_prepare(ctx, st, "INSERT INTO stats_files(repo, path) VALUES (?1, ?2)", &b->files.ins)) ||
	    (err = store_prepare(ctx, st, "INSERT INTO stats_peers(key) VALUES (?1)", &b->peers.ins)))
		return err;
	if (!(b->blob = malloc(8 + (size_t)STORE_SC_CHUNK * STORE_SC_ROW)))
		return hm_fail(ctx, HM_ERR_NOMEM, "out of memory building the statistics cache");
	return HM_OK;
}

static void builder_release(struct store_sc_builder *b)
{
	for (int t = 0; t < 2; t++) {
		sqlite3_finalize(b->next[t]);
		sqlite3_finalize(b->rows[t]);
	}
	sqlite3_finalize(b->ins_chunk);
	bdict_release(&b->repos);
	bdict_release(&b->files);
	bdict_release(&b->peers);
	util_buf_release(&b->key);
	free(b->blob);
}

void store_sc_builder_free(struct store_sc_builder *b)
{
	if (!b)
		return;
	builder_release(b);
	free(b);
}

enum hm_err store_stats_pack(struct hm_ctx *ctx, struct store *st, size_t *chunks)
{
	struct store_sc_builder *b = st->sc;
	enum hm_err err = HM_OK;
	int64_t first, last, seen[3];
	int waiting = 0;

	if (chunks)
		*chunks = 0;
	/* the builder stays with the handle: its dictionaries, read once, serve
	 * every later flush (reading them per chunk made a pull of 100,000
	 * files quadratic); builder_load reads again what other packers added */
	if (!b) {
		if (!(b = calloc(1, sizeof(*b))))
			return hm_fail(ctx, HM_ERR_NOMEM, "out of memory building the statistics cache");
		if ((err = builder_init(ctx, st, b))) {
			store_sc_builder_free(b);
			return err;
		}
		st->sc = b;
	}
	for (int t = 0; t < 2 && !err; t++)
		if (!(err = next_chunk(ctx, b, t, &first, &last)) && last)
			waiting = 1;
	while (!err && waiting) {
		if (hm_cancelled(ctx)) {
			err = hm_fail(ctx, HM_ERR_CANCELLED, "interrupted");
			break;
		}
		/* look again under the write lock: another writer may have packed them */
		if ((err = store_exec(ctx, st, "BEGIN IMMEDIATE")))
			break;
		if ((err = builder_load(ctx, b)))
			goto rollback;
		waiting = 0;
		for (int k = 0; k < SC_BATCH; k++) {
			int built = 0;
			for (int t = 0; t < 2; t++) {
				if ((err = next_chunk(ctx, b, t, &first, &last)))
					goto rollback;
				if (!last)
					continue;
				if ((err = build_chunk(ctx, b, t, first, last)))
					goto rollback;
				built = 1;
				if (chunks)
					++*chunks;
			}
			if (!(waiting = built))
				break;
		}
		/* the dictionaries as this transaction leaves them */
		if ((err = dict_sizes(ctx, b, seen)) || (err = store_exec(ctx, st, "COMMIT")))
			goto rollback;
		memcpy(b->seen, seen, sizeof(seen));
		continue;
rollback:
		store_rollback(st);
		builder_forget(b);
	}
	return err;
}

void store_stats_maintain(struct hm_ctx *ctx, struct store *st)
{
	/* rows are committed already; the cache only saves time later */
	if (store_stats_pack(ctx, st, NULL) != HM_OK)
		ctx->errmsg[0] = '\0';
}
