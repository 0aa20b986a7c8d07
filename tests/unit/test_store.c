/* test_store.c - the blob store, index, locks, gc, checkout and stats. */
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "unit.h"
#include "store_helpers.h"
#include "../../store/store.h"
#include "../../verify/verify.h"
#include "../../util/util.h"
#include "../../store/checkout.h"
#include "../../store/gc.h"
#include "../../store/index.h"
#include "../../store/stats.h"

/* Paths here live under a short mkdtemp dir; gcc at -O2 cannot know that. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#define C1 "1111111111111111111111111111111111111111"
#define C2 "2222222222222222222222222222222222222222"
#define C3 "abcdef0000000000000000000000000000000001"
#define C4 "abcdef0000000000000000000000000000000002"

static int write_file(const char *path, const char *data)
{
	FILE *f = fopen(path, "wb");
	size_t n = strlen(data);
	if (!f)
		return -1;
	if (n && fwrite(data, 1, n, f) != n) {
		fclose(f);
		return -1;
	}
	return fclose(f);
}

/* Writes content to a temp file in the store, hashes it and adopts it. */
static enum hm_err add_blob(struct hm_ctx *ctx, struct store *st, const char *content,
			    int durable, struct store_file *f)
{
	char tmp[PATH_MAX];
	uint64_t size;
	enum hm_err err;
	static int seq;

	snprintf(tmp, sizeof(tmp), "%s/tmp/t%ld-%d.part", store_dir(st), (long)getpid(), seq++);
	if (write_file(tmp, content) < 0)
		return HM_ERR_IO;
	if ((err = verify_file(ctx, tmp, 1, f->sha256, f->git_oid, &size)))
		return err;
	f->size = size;
	return store_blob_adopt(ctx, st, tmp, f->sha256, size, f->git_oid, durable);
}

static int exists(const char *path)
{
	struct stat sb;
	return lstat(path, &sb) == 0;
}

UNIT_TEST(store_open_migrates_once)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	char p[PATH_MAX];

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(store_schema_version(st) == store_schema_latest());
	CHECK_STR(store_dir(st), test_store_dir());
	store_close(st);
	st = NULL;
	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(store_schema_version(st) == store_schema_latest());
	store_close(st);
	store_close(NULL);
	snprintf(p, sizeof(p), "%s/blobs/sha256", test_store_dir());
	CHECK(exists(p));
	snprintf(p, sizeof(p), "%s/tmp", test_store_dir());
	CHECK(exists(p));
	CHECK(count_rows("PRAGMA user_version") == store_schema_latest());
	CHECK(count_rows("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN"
			 " ('repos','revisions','refs','ref_history','blobs','blob_oids','files','downloads',"
			 "'served')") == 9);
	CHECK(count_rows("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN"
			 " ('downloads_started_at','downloads_repo','files_sha256')") == 3);
	/* a store from a newer hubmirror is refused */
	{
		char db[PATH_MAX];
		sqlite3 *h;
		snprintf(db, sizeof(db), "%s/index.db", test_store_dir());
		CHECK(sqlite3_open(db, &h) == SQLITE_OK);
		CHECK(sqlite3_exec(h, "PRAGMA user_version = 99", NULL, NULL, NULL) == SQLITE_OK);
		sqlite3_close(h);
	}
	st = NULL;
	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_ERR_DB);
	CHECK(st == NULL);
	CHECK(strstr(ctx.errmsg, "newer") != NULL);
}

UNIT_TEST(store_adopt_flush_has)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_file f = {0};
	char path[PATH_MAX], sha[65];
	struct stat sb;
	uint64_t size = 0;
	int present = -1, found = -1;

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(store_blob_has(&ctx, st, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 0,
			     &present) == HM_OK);
	CHECK(present == 0);
	CHECK(add_blob(&ctx, st, "hello\n", 0, &f) == HM_OK);
	CHECK_STR(f.git_oid, "ce013625030ba8dba906f756967f9e9ca394464a");
	store_blob_path(st, f.sha256, path, sizeof(path));
	CHECK(strstr(path, "/blobs/sha256/58/5891b5b5") != NULL);
	CHECK(stat(path, &sb) == 0);
	CHECK((sb.st_mode & 0777) == 0444);
	/* queued but not flushed: visible to this handle, not yet in the db */
	CHECK(store_blob_has(&ctx, st, f.sha256, 6, &present) == HM_OK && present == 1);
	CHECK(count_rows("SELECT count(*) FROM blobs") == 0);
	CHECK(store_flush(&ctx, st) == HM_OK);
	CHECK(count_rows("SELECT count(*) FROM blobs") == 1);
	CHECK(count_rows("SELECT count(*) FROM blob_oids") == 1);
	store_close(st);
	st = NULL;

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(store_blob_has(&ctx, st, f.sha256, 6, &present) == HM_OK && present == 1);
	CHECK(store_blob_has(&ctx, st, f.sha256, 7, &present) == HM_OK && present == 0);
	CHECK(store_blob_by_git_oid(&ctx, st, f.git_oid, sha, &size, &found) == HM_OK);
	CHECK(found == 1 && size == 6);
	CHECK_STR(sha, f.sha256);
	CHECK(store_blob_by_git_oid(&ctx, st, "0000000000000000000000000000000000000000", sha, &size,
				    &found) == HM_OK && found == 0);
	CHECK(store_blob_has(&ctx, st, "XYZ", 6, &present) == HM_ERR_BAD_INPUT);
	/* the row without the file is not "has" */
	CHECK(chmod(path, 0644) == 0 && unlink(path) == 0);
	CHECK(store_blob_has(&ctx, st, f.sha256, 6, &present) == HM_OK && present == 0);
	/* durable adoption, and bad input */
	CHECK(add_blob(&ctx, st, "hello\n", 1, &f) == HM_OK);
	CHECK(store_blob_has(&ctx, st, f.sha256, 6, &present) == HM_OK && present == 1);
	snprintf(path, sizeof(path), "%s/tmp/x", test_store_dir());
	CHECK(write_file(path, "abc") == 0);
	CHECK(store_blob_adopt(&ctx, st, path, "NOTHEX", 3, NULL, 1) == HM_ERR_BAD_INPUT);
	CHECK(store_blob_adopt(&ctx, st, path, f.sha256, 99, NULL, 1) == HM_ERR_CORRUPT);
	store_close(st);
}

UNIT_TEST(store_adopt_dedup)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_file a = {0}, b = {0};
	char path[PATH_MAX], tmp[PATH_MAX];
	struct stat s1, s2;

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(add_blob(&ctx, st, "same content", 1, &a) == HM_OK);
	store_blob_path(st, a.sha256, path, sizeof(path));
	CHECK(stat(path, &s1) == 0);
	/* the second copy loses the race: its temp file goes, the blob stays */
	snprintf(tmp, sizeof(tmp), "%s/tmp/t-dup", test_store_dir());
	CHECK(write_file(tmp, "same content") == 0);
	CHECK(verify_file(&ctx, tmp, 1, b.sha256, b.git_oid, &b.size) == HM_OK);
	CHECK(store_blob_adopt(&ctx, st, tmp, b.sha256, b.size, b.git_oid, 0) == HM_OK);
	CHECK(!exists(tmp));
	CHECK(stat(path, &s2) == 0);
	CHECK(s1.st_ino == s2.st_ino);
	CHECK(store_flush(&ctx, st) == HM_OK);
	CHECK(count_rows("SELECT count(*) FROM blobs") == 1);
	CHECK(count_rows("SELECT count(*) FROM blob_oids") == 1);
	store_close(st);
}

UNIT_TEST(store_lock_contention)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	char part[PATH_MAX], state[PATH_MAX];
	int fd = -1, fd2 = -1, status = 0;
	pid_t pid;

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	store_part_paths(st, "abc", part, state, sizeof(part));
	CHECK(strstr(part, "/tmp/abc.part") != NULL);
	CHECK(strstr(state, "/tmp/abc.state") != NULL);
	CHECK(store_lock_try(&ctx, st, "abc", &fd) == HM_OK && fd >= 0);

	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct hm_ctx c = {0};
		int cfd = -1;
		enum hm_err e = store_lock_try(&c, st, "abc", &cfd);
		_exit(e == HM_ERR_LOCKED ? 0 : 1);
	}
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* another key is independent; an unsafe key is refused */
	CHECK(store_lock_try(&ctx, st, "def", &fd2) == HM_OK);
	store_unlock(st, "def", fd2);
	CHECK(store_lock_try(&ctx, st, "../x", &fd2) == HM_ERR_USAGE);
	CHECK(store_lock_try(&ctx, st, "a/b", &fd2) == HM_ERR_USAGE);

	store_unlock(st, "abc", fd);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct hm_ctx c = {0};
		int cfd = -1;
		enum hm_err e = store_lock_try(&c, st, "abc", &cfd);
		_exit(e == HM_OK ? 0 : 1);
	}
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	store_close(st);
}

/* A store with org/model at C1 (main) and C2 (main moved), three files. */
static int setup_repo(struct hm_ctx *ctx, struct store **out, struct store_file *files)
{
	struct store *st = NULL;
	if (store_open(ctx, test_store_dir(), &st) != HM_OK)
		return -1;
	*out = st;
	files[0].path = "config.json";
	files[1].path = "sub/dir/model.safetensors";
	files[2].path = "README.md";
	if (add_blob(ctx, st, "{\"a\": 1}\n", 0, &files[0]) ||
	    add_blob(ctx, st, "weights weights weights", 0, &files[1]) ||
	    add_blob(ctx, st, "# readme\n", 0, &files[2]))
		return -1;
	files[1].lfs = 1;
	if (store_record_revision(ctx, st, "model", "org/model", C1, "main", files, 2) ||
	    store_record_revision(ctx, st, "model", "org/model", C2, "main", files, 3))
		return -1;
	return 0;
}

UNIT_TEST(store_revisions_and_resolve)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_file files[3] = {{0}};
	struct store_file bad = {0};
	char commit[41];

	CHECK(setup_repo(&ctx, &st, files) == 0);
	CHECK(store_resolve(&ctx, st, "model", "org/model", NULL, commit) == HM_OK);
	CHECK_STR(commit, C2);
	CHECK(store_resolve(&ctx, st, "model", "org/model", "main", commit) == HM_OK);
	CHECK_STR(commit, C2);
	CHECK(store_resolve(&ctx, st, "model", "org/model", C1, commit) == HM_OK);
	CHECK_STR(commit, C1);
	CHECK(store_resolve(&ctx, st, "model", "org/model", "1111111", commit) == HM_OK);
	CHECK_STR(commit, C1);
	CHECK(store_resolve(&ctx, st, "model", "org/model", "111111", commit) == HM_ERR_NOT_FOUND);
	CHECK(store_resolve(&ctx, st, "model", "org/model", "3333333", commit) == HM_ERR_NOT_FOUND);
	CHECK(store_resolve(&ctx, st, "model", "org/model", "v1.0", commit) == HM_ERR_NOT_FOUND);
	CHECK(store_resolve(&ctx, st, "model", "org/other", NULL, commit) == HM_ERR_NOT_FOUND);
	CHECK(store_resolve(&ctx, st, "dataset", "org/model", NULL, commit) == HM_ERR_NOT_FOUND);
	CHECK(strstr(ctx.errmsg, "org/model") != NULL);
	/* ambiguous prefixes; uppercase hex is accepted */
	CHECK(store_record_revision(&ctx, st, "model", "org/model", C3, "v1", files, 1) == HM_OK);
	CHECK(store_record_revision(&ctx, st, "model", "org/model", C4, NULL, files, 1) == HM_OK);
	CHECK(store_resolve(&ctx, st, "model", "org/model", "abcdef0", commit) == HM_ERR_USAGE);
	CHECK(strstr(ctx.errmsg, "ambiguous") != NULL);
	CHECK(store_resolve(&ctx, st, "model", "org/model", "ABCDEF00000000000000000000000000000000", commit) == HM_ERR_USAGE);
	CHECK(store_resolve(&ctx, st, "model", "org/model", "ABCDEF0000000000000000000000000000000002", commit) == HM_OK);
	CHECK_STR(commit, C4);
	CHECK(store_resolve(&ctx, st, "model", "org/model", "v1", commit) == HM_OK);
	CHECK_STR(commit, C3);
	/* history: main at C1 then C2, v1 at C3; re-recording the same target adds nothing */
	CHECK(store_record_revision(&ctx, st, "model", "org/model", C2, "main", files, 3) == HM_OK);
	CHECK(count_rows("SELECT count(*) FROM ref_history") == 3);
	CHECK(count_rows("SELECT count(*) FROM revisions") == 4);

	/* without a main ref, NULL means the most recently pulled */
	CHECK(store_record_revision(&ctx, st, "dataset", "ds", C1, NULL, files, 1) == HM_OK);
	CHECK(store_record_revision(&ctx, st, "dataset", "ds", C2, "dev", files, 1) == HM_OK);
	CHECK(store_resolve(&ctx, st, "dataset", "ds", NULL, commit) == HM_OK);
	CHECK_STR(commit, C2);

	/* refused: unknown blob, unsafe path, bad ids */
	bad.path = "x.bin";
	memset(bad.sha256, 'e', 64);
	CHECK(store_record_revision(&ctx, st, "model", "org/model", C1, NULL, &bad, 1) == HM_ERR_NOT_FOUND);
	bad = files[0];
	bad.path = "../escape";
	CHECK(store_record_revision(&ctx, st, "model", "org/model", C1, NULL, &bad, 1) == HM_ERR_BAD_INPUT);
	CHECK(store_record_revision(&ctx, st, "model", "bad--id", C1, NULL, files, 1) == HM_ERR_BAD_INPUT);
	CHECK(store_record_revision(&ctx, st, "space", "org/model", C1, NULL, files, 1) == HM_ERR_USAGE);
	CHECK(store_record_revision(&ctx, st, "model", "org/model", "abc", NULL, files, 1) == HM_ERR_BAD_INPUT);
	CHECK(store_record_revision(&ctx, st, "model", "org/model", C1, "../main", files, 1) == HM_ERR_BAD_INPUT);
	/* a failed record changes nothing */
	CHECK(count_rows("SELECT count(*) FROM files WHERE path = 'x.bin'") == 0);
	store_close(st);
}

UNIT_TEST(store_listing_and_rm)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_file files[3] = {{0}};
	struct store_repo_info *repos = NULL;
	struct store_rev_info *revs = NULL;
	struct store_file *fl = NULL;
	size_t n = 0;
	char commit[41];

	CHECK(setup_repo(&ctx, &st, files) == 0);
	CHECK(store_record_revision(&ctx, st, "dataset", "ds", C1, "main", files, 1) == HM_OK);
	CHECK(store_list_repos(&ctx, st, &repos, &n) == HM_OK);
	CHECK(n == 2);
	CHECK_STR(repos[0].type, "dataset");
	CHECK_STR(repos[0].name, "ds");
	CHECK(repos[0].nrevisions == 1 && repos[0].bytes == files[0].size);
	CHECK_STR(repos[1].name, "org/model");
	CHECK(repos[1].nrevisions == 2);
	CHECK(repos[1].bytes == 2 * (files[0].size + files[1].size) + files[2].size);
	store_repo_info_free(repos, n);

	CHECK(store_list_revisions(&ctx, st, "model", "org/model", &revs, &n) == HM_OK);
	CHECK(n == 2);
	CHECK_STR(revs[0].commit, C2); /* newest first */
	CHECK_STR(revs[0].refs, "main");
	CHECK(revs[0].nfiles == 3);
	CHECK_STR(revs[1].commit, C1);
	CHECK_STR(revs[1].refs, "");
	CHECK(revs[1].nfiles == 2 && revs[1].bytes == files[0].size + files[1].size);
	CHECK(revs[1].pulled_at > 0);
	store_rev_info_free(revs, n);
	CHECK(store_list_revisions(&ctx, st, "model", "nope", &revs, &n) == HM_ERR_NOT_FOUND);

	CHECK(store_list_files(&ctx, st, "model", "org/model", C2, &fl, &n) == HM_OK);
	CHECK(n == 3);
	CHECK_STR(fl[0].path, "README.md"); /* sorted by path */
	CHECK_STR(fl[1].path, "config.json");
	CHECK_STR(fl[2].path, "sub/dir/model.safetensors");
	CHECK(fl[2].lfs == 1 && fl[1].lfs == 0);
	CHECK_STR(fl[2].sha256, files[1].sha256);
	CHECK_STR(fl[1].git_oid, files[0].git_oid);
	CHECK(fl[1].size == files[0].size);
	store_files_free(fl, n);
	CHECK(store_list_files(&ctx, st, "model", "org/model", C3, &fl, &n) == HM_ERR_NOT_FOUND);

	/* rm one revision: its ref goes with it; the other stays */
	CHECK(store_rm(&ctx, st, "model", "org/model", C2) == HM_OK);
	CHECK(store_rm(&ctx, st, "model", "org/model", C2) == HM_ERR_NOT_FOUND);
	CHECK(store_resolve(&ctx, st, "model", "org/model", "main", commit) == HM_ERR_NOT_FOUND);
	CHECK(store_resolve(&ctx, st, "model", "org/model", NULL, commit) == HM_OK);
	CHECK_STR(commit, C1);
	CHECK(count_rows("SELECT count(*) FROM refs") == 1);
	/* the last revision takes the repo with it */
	CHECK(store_rm(&ctx, st, "model", "org/model", C1) == HM_OK);
	CHECK(store_rm(&ctx, st, "dataset", "ds", NULL) == HM_OK);
	CHECK(store_rm(&ctx, st, "dataset", "ds", NULL) == HM_ERR_NOT_FOUND);
	CHECK(store_list_repos(&ctx, st, &repos, &n) == HM_OK);
	CHECK(n == 0);
	store_repo_info_free(repos, n);
	CHECK(count_rows("SELECT count(*) FROM files") == 0);
	CHECK(count_rows("SELECT count(*) FROM blobs") == 3); /* blobs wait for gc */
	store_close(st);
}

UNIT_TEST(store_gc_removes_garbage)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL, *other = NULL;
	struct store_file files[3] = {{0}}, loose = {0}, fresh = {0};
	struct store_gc_result r;
	char p[PATH_MAX], part[PATH_MAX], state[PATH_MAX], orphan[PATH_MAX];
	int fd = -1;

	CHECK(setup_repo(&ctx, &st, files) == 0);
	CHECK(store_rm(&ctx, st, "model", "org/model", C2) == HM_OK); /* README.md now unreferenced */
	CHECK(add_blob(&ctx, st, "loose blob", 1, &loose) == HM_OK);
	CHECK(store_flush(&ctx, st) == HM_OK);
	/* an orphan file (crash between rename and flush) */
	snprintf(orphan, sizeof(orphan), "%s/blobs/sha256/00/%064d", test_store_dir(), 0);
	CHECK(util_mkdir_parents(orphan, 0755) == 0 && write_file(orphan, "junk") == 0);
	/* a free partial and a held one */
	store_part_paths(st, "free1", part, state, sizeof(part));
	CHECK(write_file(part, "xx") == 0 && write_file(state, "{}") == 0);
	store_part_paths(st, "held1", part, state, sizeof(part));
	CHECK(write_file(part, "yy") == 0);
	CHECK(store_lock_try(&ctx, st, "held1", &fd) == HM_OK);

	/* while another handle has the store open, fresh blobs and orphans stay */
	CHECK(store_open(&ctx, test_store_dir(), &other) == HM_OK);
	CHECK(store_gc(&ctx, st, NULL, &r) == HM_OK);
	CHECK(r.blobs_removed == 0);
	CHECK(r.partials_removed == 1);
	CHECK(exists(orphan));
	store_close(other);

	CHECK(store_gc(&ctx, st, NULL, &r) == HM_OK);
	CHECK(r.blobs_removed == 3); /* README, loose, orphan */
	CHECK(r.bytes_removed == files[2].size + loose.size + 4);
	CHECK(r.partials_removed == 0);
	CHECK(!exists(orphan));
	store_blob_path(st, files[2].sha256, p, sizeof(p));
	CHECK(!exists(p));
	store_blob_path(st, loose.sha256, p, sizeof(p));
	CHECK(!exists(p));
	store_blob_path(st, files[0].sha256, p, sizeof(p));
	CHECK(exists(p));
	store_blob_path(st, files[1].sha256, p, sizeof(p));
	CHECK(exists(p));
	store_part_paths(st, "free1", part, state, sizeof(part));
	CHECK(!exists(part) && !exists(state));
	snprintf(p, sizeof(p), "%s/tmp/free1.lock", test_store_dir());
	CHECK(!exists(p));
	store_part_paths(st, "held1", part, state, sizeof(part));
	CHECK(exists(part));
	CHECK(count_rows("SELECT count(*) FROM blobs") == 2);
	CHECK(count_rows("SELECT count(*) FROM blob_oids") == 2);

	/* once the download lets go, its partial is garbage too */
	store_unlock(st, "held1", fd);
	CHECK(store_gc(&ctx, st, NULL, &r) == HM_OK);
	CHECK(r.partials_removed == 1 && r.blobs_removed == 0);
	CHECK(!exists(part));
	/* what is still referenced still checks out */
	CHECK(add_blob(&ctx, st, "fresh", 0, &fresh) == HM_OK);
	CHECK(store_gc(&ctx, st, NULL, &r) == HM_OK); /* flushes first; fresh is unreferenced */
	CHECK(r.blobs_removed == 1);
	store_close(st);
}

UNIT_TEST(store_checkout_files)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_file files[3] = {{0}};
	char out[512], p[PATH_MAX], blob[PATH_MAX];
	char *data = NULL;
	size_t len = 0;
	struct stat a, b;

	CHECK(setup_repo(&ctx, &st, files) == 0);
	snprintf(out, sizeof(out), "%s/out", unit_tmpdir());
	/* something stale in the way is replaced */
	snprintf(p, sizeof(p), "%s/config.json", out);
	CHECK(util_mkdir_p(out, 0755) == 0 && write_file(p, "stale") == 0);
	CHECK(store_checkout(&ctx, st, "model", "org/model", C2, "main", out, STORE_LAYOUT_FILES, 0) == HM_OK);
	CHECK(util_read_file(p, 1000, &data, &len) == 0);
	CHECK_STR(data, "{\"a\": 1}\n");
	free(data);
	for (int i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", out, files[i].path);
		store_blob_path(st, files[i].sha256, blob, sizeof(blob));
		CHECK(stat(p, &a) == 0 && stat(blob, &b) == 0);
		CHECK(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
	}
	/* --copy: independent, writable files with the same content */
	CHECK(store_checkout(&ctx, st, "model", "org/model", C2, NULL, out, STORE_LAYOUT_FILES, 1) == HM_OK);
	for (int i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", out, files[i].path);
		store_blob_path(st, files[i].sha256, blob, sizeof(blob));
		CHECK(stat(p, &a) == 0 && stat(blob, &b) == 0);
		CHECK(a.st_ino != b.st_ino && (a.st_mode & 0200) && a.st_size == b.st_size);
	}
	/* twice is fine */
	CHECK(store_checkout(&ctx, st, "model", "org/model", C2, NULL, out, STORE_LAYOUT_FILES, 0) == HM_OK);
	CHECK(store_checkout(&ctx, st, "model", "org/model", C3, NULL, out, STORE_LAYOUT_FILES, 0) == HM_ERR_NOT_FOUND);
	CHECK(store_checkout(&ctx, st, "model", "org/model", "main", NULL, out, STORE_LAYOUT_FILES, 0) == HM_ERR_USAGE);
	store_close(st);
}

UNIT_TEST(store_checkout_hf_cache)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_file files[3] = {{0}};
	char cache[512], p[PATH_MAX], blob[PATH_MAX], target[PATH_MAX];
	char *data = NULL;
	size_t len = 0;
	ssize_t n;
	struct stat a, b;

	CHECK(setup_repo(&ctx, &st, files) == 0);
	snprintf(cache, sizeof(cache), "%s/hub", unit_tmpdir());
	CHECK(store_checkout(&ctx, st, "model", "org/model", C2, "main", cache, STORE_LAYOUT_HF_CACHE, 0) == HM_OK);

	/* non-LFS: named by git oid, symlink two levels up */
	snprintf(p, sizeof(p), "%s/models--org--model/snapshots/" C2 "/config.json", cache);
	n = readlink(p, target, sizeof(target) - 1);
	CHECK(n > 0);
	target[n] = '\0';
	CHECK(strncmp(target, "../../blobs/", 12) == 0);
	CHECK_STR(target + 12, files[0].git_oid);
	CHECK(util_read_file(p, 1000, &data, &len) == 0);
	CHECK_STR(data, "{\"a\": 1}\n");
	free(data);

	/* LFS, two directories deep: named by sha256, four levels up */
	snprintf(p, sizeof(p), "%s/models--org--model/snapshots/" C2 "/sub/dir/model.safetensors", cache);
	n = readlink(p, target, sizeof(target) - 1);
	CHECK(n > 0);
	target[n] = '\0';
	CHECK(strncmp(target, "../../../../blobs/", 18) == 0);
	CHECK_STR(target + 18, files[1].sha256);
	CHECK(stat(p, &a) == 0);
	store_blob_path(st, files[1].sha256, blob, sizeof(blob));
	CHECK(stat(blob, &b) == 0 && a.st_ino == b.st_ino);
	snprintf(p, sizeof(p), "%s/models--org--model/blobs/%s", cache, files[1].sha256);
	CHECK(lstat(p, &a) == 0 && S_ISREG(a.st_mode) && a.st_ino == b.st_ino);

	snprintf(p, sizeof(p), "%s/models--org--model/refs/main", cache);
	CHECK(util_read_file(p, 1000, &data, &len) == 0);
	CHECK(len == 40);
	CHECK_STR(data, C2);
	free(data);

	/* an older revision beside it; a dataset without a ref, no org */
	CHECK(store_checkout(&ctx, st, "model", "org/model", C1, NULL, cache, STORE_LAYOUT_HF_CACHE, 0) == HM_OK);
	snprintf(p, sizeof(p), "%s/models--org--model/snapshots/" C1 "/config.json", cache);
	CHECK(exists(p));
	CHECK(store_record_revision(&ctx, st, "dataset", "ds", C1, NULL, files, 3) == HM_OK);
	CHECK(store_checkout(&ctx, st, "dataset", "ds", C1, NULL, cache, STORE_LAYOUT_HF_CACHE, 0) == HM_OK);
	snprintf(p, sizeof(p), "%s/datasets--ds/snapshots/" C1 "/README.md", cache);
	CHECK(util_read_file(p, 1000, &data, &len) == 0);
	CHECK_STR(data, "# readme\n");
	free(data);
	snprintf(p, sizeof(p), "%s/datasets--ds/refs", cache);
	CHECK(!exists(p));
	store_close(st);
}

UNIT_TEST(store_download_stats)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_stats_row *rows = NULL;
	size_t n = 0;
	struct store_download d = {
		.repo_type = "model", .repo = "org/a", .revision = C1, .path = "x.bin",
		.sha256 = NULL, .size = 100, .bytes = 100, .seconds = 1.5, .connections = 4,
		.retries = 1, .result = "ok", .error = NULL, .endpoint = "hub.example", .started_at = 1,
	};

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(pulls_of(&ctx, st, NULL, &rows, &n) == HM_OK);
	CHECK(n == 1 && rows[0].key == NULL && rows[0].files == 0);
	store_stats_free(rows, n);

	CHECK(store_record_download(&ctx, st, &d) == HM_OK);
	d.path = "y.bin";
	d.bytes = 50;
	d.retries = 2;
	CHECK(store_record_download(&ctx, st, &d) == HM_OK);
	d.result = "failed";
	d.error = "connection reset";
	d.bytes = 10;
	d.retries = 5;
	CHECK(store_record_download(&ctx, st, &d) == HM_OK);
	d.repo_type = "dataset";
	d.repo = "ds";
	d.result = "ok";
	d.error = NULL;
	d.bytes = 7;
	d.retries = 0;
	d.seconds = 0.5;
	CHECK(store_record_download(&ctx, st, &d) == HM_OK);
	d.result = NULL;
	CHECK(store_record_download(&ctx, st, &d) == HM_ERR_USAGE);

	CHECK(pulls_of(&ctx, st, NULL, &rows, &n) == HM_OK); /* flushes first */
	CHECK(n == 3);
	CHECK_STR(rows[0].key, "dataset:ds");
	CHECK(rows[0].files == 1 && rows[0].bytes == 7 && rows[0].failures == 0);
	CHECK_STR(rows[1].key, "model:org/a");
	CHECK(rows[1].files == 2 && rows[1].bytes == 160 && rows[1].failures == 1);
	CHECK(rows[1].retries == 8 && rows[1].seconds > 4.49 && rows[1].seconds < 4.51);
	CHECK(rows[2].key == NULL);
	CHECK(rows[2].files == 3 && rows[2].bytes == 167 && rows[2].failures == 1 && rows[2].retries == 8);
	store_stats_free(rows, n);

	CHECK(pulls_of(&ctx, st, "model:org/a", &rows, &n) == HM_OK);
	CHECK(n == 2);
	CHECK_STR(rows[0].key, "model:org/a");
	CHECK(rows[1].key == NULL && rows[1].bytes == 160);
	store_stats_free(rows, n);
	CHECK(pulls_of(&ctx, st, "dataset:org/a", &rows, &n) == HM_OK);
	CHECK(n == 1 && rows[0].files == 0);
	store_stats_free(rows, n);
	store_close(st);
	CHECK(count_rows("SELECT count(*) FROM downloads WHERE error = 'connection reset'") == 1);
}

/* Several processes pulling into one store at once: every write waits its
 * turn (busy timeout) and nothing is lost. */
UNIT_TEST(store_concurrent_writers)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct store_repo_info *repos = NULL;
	size_t n = 0;
	enum { NPROC = 4, NBLOB = 40 };
	pid_t pids[NPROC];
	int status;

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	store_close(st);
	st = NULL;
	for (int p = 0; p < NPROC; p++) {
		pids[p] = fork();
		CHECK(pids[p] >= 0);
		if (pids[p] == 0) {
			struct hm_ctx c = {0};
			struct store *s = NULL;
			struct store_file f[NBLOB];
			char content[64], repo[32], commit[41];
			int ok = store_open(&c, test_store_dir(), &s) == HM_OK;
			memset(f, 0, sizeof(f));
			for (int i = 0; ok && i < NBLOB; i++) {
				/* half the blobs are shared by every process */
				snprintf(content, sizeof(content), "blob %d of %d", i, i % 2 ? p : -1);
				f[i].path = util_asprintf("f%02d", i);
				ok = f[i].path && add_blob(&c, s, content, i % 3 == 0, &f[i]) == HM_OK;
				if (ok && i % 10 == 9)
					ok = store_flush(&c, s) == HM_OK;
			}
			snprintf(repo, sizeof(repo), "org/r%d", p);
			snprintf(commit, sizeof(commit), "%040d", p + 1);
			ok = ok && store_record_revision(&c, s, "model", repo, commit, "main", f, NBLOB) == HM_OK;
			if (!ok)
				fprintf(stderr, "writer %d: %s\n", p, c.errmsg);
			store_close(s);
			for (int i = 0; i < NBLOB; i++)
				free(f[i].path);
			_exit(ok ? 0 : 1);
		}
	}
	for (int p = 0; p < NPROC; p++) {
		CHECK(waitpid(pids[p], &status, 0) == pids[p]);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	CHECK(store_list_repos(&ctx, st, &repos, &n) == HM_OK);
	CHECK(n == NPROC);
	store_repo_info_free(repos, n);
	store_close(st);
	CHECK(count_rows("SELECT count(*) FROM blobs") == NBLOB / 2 + NPROC * NBLOB / 2);
	CHECK(count_rows("SELECT count(*) FROM files") == NPROC * NBLOB);
}

UNIT_TEST(store_lock_files_go_with_their_release)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	char path[PATH_MAX];
	int fd = -1, fd2 = -1, fd3 = -1;

	CHECK(store_open(&ctx, test_store_dir(), &st) == HM_OK);
	snprintf(path, sizeof(path), "%s/tmp/k1.lock", test_store_dir());
	CHECK(store_lock_try(&ctx, st, "k1", &fd) == HM_OK);
	CHECK(access(path, F_OK) < 0); /* no file per key: one byte of .keys.lock */
	/* a second lock of the same process excludes as another process's does */
	CHECK(store_lock_try(&ctx, st, "k1", &fd2) == HM_ERR_LOCKED);
	CHECK(store_lock_try(&ctx, st, "k2", &fd3) == HM_OK);
	store_unlock(st, "k1", fd);
	CHECK(store_lock_try(&ctx, st, "k1", &fd2) == HM_OK);
	CHECK(store_lock_try(&ctx, st, "k1", &fd) == HM_ERR_LOCKED);
	store_unlock(st, "k1", fd2);
	store_unlock(st, "k2", fd3);
	store_unlock(st, "k2", -1);
	CHECK(access(path, F_OK) < 0);
	snprintf(path, sizeof(path), "%s/tmp/.keys.lock", test_store_dir());
	CHECK(access(path, F_OK) == 0);
	store_close(st);
}
