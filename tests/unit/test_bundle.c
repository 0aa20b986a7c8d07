/* test_bundle.c - the bundle manifest parser, and import from memory. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "../../bundle/bundle.h"
#include "../../util/util.h"

#define H1 "1111111111111111111111111111111111111111111111111111111111111111"
#define H2 "2222222222222222222222222222222222222222222222222222222222222222"
#define C1 "abcdefabcdefabcdefabcdefabcdefabcdefabcd"
#define O1 "0123456789012345678901234567890123456789"

/* A manifest with one revision; files is the JSON array body. */
static char *manifest(const char *repo_extra, const char *files)
{
	return util_asprintf("{\"format\": \"hubmirror-bundle\", \"version\": 1, \"created_at\": 1700000000,"
			     " \"repos\": [{\"type\": \"model\", \"id\": \"org/name\", \"revision\": \"" C1 "\","
			     " \"refs\": [\"main\"]%s, \"files\": [%s]}]}",
			     repo_extra, files);
}

static enum hm_err parse(const char *s, struct bundle_manifest **m)
{
	struct hm_ctx ctx = {0};
	return bundle_manifest_parse(&ctx, s, strlen(s), m);
}

/* 1 when parsing s fails with HM_ERR_BAD_INPUT. */
static int refused(char *s)
{
	struct bundle_manifest *m = NULL;
	enum hm_err err = parse(s, &m);
	free(s);
	bundle_manifest_free(m);
	return err == HM_ERR_BAD_INPUT && m == NULL;
}

UNIT_TEST(bundle_manifest_parses)
{
	char *s = manifest("", "{\"path\": \"a.txt\", \"size\": 3, \"sha256\": \"" H1 "\", \"git_oid\": \"" O1 "\", \"lfs\": false},"
			       "{\"path\": \"dir/b.bin\", \"size\": 10, \"sha256\": \"" H2 "\", \"git_oid\": \"\", \"lfs\": true},"
			       "{\"path\": \"c.txt\", \"size\": 3, \"sha256\": \"" H1 "\", \"git_oid\": \"" O1 "\", \"lfs\": false}");
	struct bundle_manifest *m = NULL;
	CHECK(parse(s, &m) == HM_OK);
	free(s);
	CHECK(m->version == 1 && m->created_at == 1700000000 && m->nrevs == 1);
	CHECK_STR(m->revs[0].repo, "org/name");
	CHECK_STR(m->revs[0].type, "model");
	CHECK_STR(m->revs[0].commit, C1);
	CHECK(m->revs[0].nrefs == 1);
	CHECK_STR(m->revs[0].refs[0], "main");
	CHECK(m->revs[0].nfiles == 3 && m->revs[0].files[1].lfs && m->revs[0].files[1].size == 10);
	/* blobs: each once, sorted, sizes summed once */
	CHECK(m->nblobs == 2 && m->blob_bytes == 13);
	CHECK_STR(m->blobs[0].sha256, H1);
	CHECK_STR(m->blobs[0].git_oid, O1);
	CHECK_STR(m->blobs[1].git_oid, "");
	CHECK(bundle_manifest_find_blob(m, H2) == 1);
	CHECK(bundle_manifest_find_blob(m, "33") == -1);
	/* dump and parse again: the same */
	char *d = bundle_manifest_dump(m);
	struct bundle_manifest *m2 = NULL;
	CHECK(d && parse(d, &m2) == HM_OK);
	CHECK(m2->nblobs == 2 && m2->revs[0].nfiles == 3 && !strcmp(m2->revs[0].files[2].path, "c.txt"));
	free(d);
	bundle_manifest_free(m2);
	bundle_manifest_free(m);
}

UNIT_TEST(bundle_manifest_refuses)
{
	const char *f = "{\"path\": \"a\", \"size\": 1, \"sha256\": \"" H1 "\", \"lfs\": false}";
	CHECK(refused(util_strdup("")));
	CHECK(refused(util_strdup("[]")));
	CHECK(refused(util_strdup("{\"format\": \"other\", \"version\": 1, \"repos\": []}")));
	CHECK(refused(util_strdup("{\"format\": \"hubmirror-bundle\", \"version\": 1, \"repos\": []}")));
	CHECK(refused(util_strdup("{\"format\": \"hubmirror-bundle\", \"version\": 2, \"repos\": [{}]}")));
	CHECK(refused(util_strdup("{\"format\": \"hubmirror-bundle\", \"version\": \"1\", \"repos\": [{}]}")));
	/* duplicate keys */
	CHECK(refused(util_strdup("{\"format\": \"hubmirror-bundle\", \"format\": \"hubmirror-bundle\", \"version\": 1}")));
	/* paths */
	CHECK(refused(manifest("", "{\"path\": \"../x\", \"size\": 1, \"sha256\": \"" H1 "\"}")));
	CHECK(refused(manifest("", "{\"path\": \"/abs\", \"size\": 1, \"sha256\": \"" H1 "\"}")));
	CHECK(refused(manifest("", "{\"path\": \"a/./b\", \"size\": 1, \"sha256\": \"" H1 "\"}")));
	CHECK(refused(manifest("", "{\"path\": \"a\\u0000b\", \"size\": 1, \"sha256\": \"" H1 "\"}")));
	CHECK(refused(manifest("", "{\"path\": \".git/config\", \"size\": 1, \"sha256\": \"" H1 "\"}")));
	CHECK(refused(manifest("", "{\"size\": 1, \"sha256\": \"" H1 "\"}")));
	/* digests and sizes */
	CHECK(refused(manifest("", "{\"path\": \"a\", \"size\": 1, \"sha256\": \"ABC\"}")));
	CHECK(refused(manifest("", "{\"path\": \"a\", \"size\": 1, \"sha256\": \"" H1 "0\"}")));
	CHECK(refused(manifest("", "{\"path\": \"a\", \"size\": -1, \"sha256\": \"" H1 "\"}")));
	CHECK(refused(manifest("", "{\"path\": \"a\", \"size\": 1.5, \"sha256\": \"" H1 "\"}")));
	CHECK(refused(manifest("", "{\"path\": \"a\", \"size\": \"1\", \"sha256\": \"" H1 "\"}")));
	CHECK(refused(manifest("", "{\"path\": \"a\", \"size\": 1, \"sha256\": \"" H1 "\", \"git_oid\": \"xyz\"}")));
	CHECK(refused(manifest("", "{\"path\": \"a\", \"size\": 1, \"sha256\": \"" H1 "\", \"lfs\": 1}")));
	/* one blob, two sizes; one path twice */
	CHECK(refused(manifest("", "{\"path\": \"a\", \"size\": 1, \"sha256\": \"" H1 "\"},"
				   "{\"path\": \"b\", \"size\": 2, \"sha256\": \"" H1 "\"}")));
	{
		char *s = util_asprintf("%s, %s", f, f);
		CHECK(refused(manifest("", s)));
		free(s);
	}
	/* the repo itself */
	CHECK(refused(util_strdup("{\"format\": \"hubmirror-bundle\", \"version\": 1, \"repos\": [{\"type\": \"space\","
				  " \"id\": \"org/name\", \"revision\": \"" C1 "\", \"files\": []}]}")));
	CHECK(refused(util_strdup("{\"format\": \"hubmirror-bundle\", \"version\": 1, \"repos\": [{\"type\": \"model\","
				  " \"id\": \"../x\", \"revision\": \"" C1 "\", \"files\": []}]}")));
	CHECK(refused(util_strdup("{\"format\": \"hubmirror-bundle\", \"version\": 1, \"repos\": [{\"type\": \"model\","
				  " \"id\": \"org/name\", \"revision\": \"main\", \"files\": []}]}")));
	CHECK(refused(manifest(", \"refs\": [\"../x\"]", f)));
	CHECK(refused(manifest(", \"refs\": [\"main\", \"main\"]", f)));
	CHECK(refused(manifest(", \"refs\": \"main\"", f)));
	/* the same revision twice */
	CHECK(refused(util_strdup("{\"format\": \"hubmirror-bundle\", \"version\": 1, \"repos\": ["
				  "{\"type\": \"model\", \"id\": \"o/n\", \"revision\": \"" C1 "\", \"files\": []},"
				  "{\"type\": \"model\", \"id\": \"o/n\", \"revision\": \"" C1 "\", \"files\": []}]}")));
}

UNIT_TEST(bundle_manifest_size_cap)
{
	struct hm_ctx ctx = {0};
	struct bundle_manifest *m = NULL;
	/* the length is checked before the bytes are looked at */
	CHECK(bundle_manifest_parse(&ctx, "{}", BUNDLE_MANIFEST_MAX + 1, &m) == HM_ERR_BAD_INPUT);
	CHECK(m == NULL && strstr(ctx.errmsg, "at most"));
}

UNIT_TEST(bundle_compress_by_name)
{
	CHECK(bundle_compress_by_name("a.tar") == BUNDLE_TAR);
	CHECK(bundle_compress_by_name("/x/a.tar.gz") == BUNDLE_GZIP);
	CHECK(bundle_compress_by_name("a.tgz") == BUNDLE_GZIP);
	CHECK(bundle_compress_by_name("a.tar.zst") == BUNDLE_ZSTD);
	CHECK(bundle_compress_by_name("a.zip") == -1);
	CHECK(bundle_compress_by_name("tar") == -1);
}

UNIT_TEST(bundle_import_memory_refuses_garbage)
{
	struct hm_ctx ctx = {0};
	struct store *st = NULL;
	struct bundle_import_result r;
	char dir[PATH_MAX];
	static const char junk[1024] = "this is not an archive";

	snprintf(dir, sizeof(dir), "%s/store", unit_tmpdir());
	CHECK(store_open(&ctx, dir, &st) == HM_OK);
	CHECK(bundle_import_memory(&ctx, st, junk, sizeof(junk), "junk", NULL, &r) == HM_ERR_BAD_INPUT);
	CHECK(strstr(ctx.errmsg, "not a bundle") != NULL);
	CHECK(r.nrecorded == 0);
	bundle_import_result_release(&r);
	store_close(st);
}
