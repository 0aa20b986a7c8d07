/* test_verify.c - digests against known vectors, files and ranges. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "unit.h"
#include "../../verify/verify.h"
#include "../../util/util.h"

#define SHA256_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define SHA256_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SHA256_HELLO "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
#define GIT_HELLO "ce013625030ba8dba906f756967f9e9ca394464a"
#define GIT_EMPTY "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"

UNIT_TEST(verify_vectors)
{
	char sha[65], oid[41];
	struct verify_hasher *h = verify_hasher_new(-1);
	CHECK(h);
	verify_hasher_update(h, "abc", 3);
	verify_hasher_final(h, sha, oid);
	verify_hasher_free(h);
	CHECK_STR(sha, SHA256_ABC);
	CHECK_STR(oid, "");

	h = verify_hasher_new(6);
	CHECK(h);
	verify_hasher_update(h, "hel", 3);
	verify_hasher_update(h, "lo\n", 3);
	verify_hasher_final(h, sha, oid);
	verify_hasher_free(h);
	CHECK_STR(sha, SHA256_HELLO);
	CHECK_STR(oid, GIT_HELLO);

	h = verify_hasher_new(0);
	CHECK(h);
	verify_hasher_final(h, sha, oid);
	verify_hasher_free(h);
	CHECK_STR(sha, SHA256_EMPTY);
	CHECK_STR(oid, GIT_EMPTY);
	verify_hasher_free(NULL);
}

static int write_file(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	if (n && fwrite(data, 1, n, f) != n) {
		fclose(f);
		return -1;
	}
	return fclose(f);
}

UNIT_TEST(verify_files_and_ranges)
{
	struct hm_ctx ctx = {0};
	char path[512], sha[65], oid[41], sha2[65];
	uint64_t size = 0;
	unsigned char *big;
	const size_t bign = (3u << 20) + 12345; /* spans several 1 MiB chunks */
	struct verify_hasher *h;
	int fd;

	snprintf(path, sizeof(path), "%s/hello", unit_tmpdir());
	CHECK(write_file(path, "hello\n", 6) == 0);
	CHECK(verify_file(&ctx, path, 1, sha, oid, &size) == HM_OK);
	CHECK_STR(sha, SHA256_HELLO);
	CHECK_STR(oid, GIT_HELLO);
	CHECK(size == 6);

	snprintf(path, sizeof(path), "%s/missing", unit_tmpdir());
	CHECK(verify_file(&ctx, path, 0, sha, oid, &size) == HM_ERR_IO);
	CHECK(strstr(ctx.errmsg, "cannot open '") != NULL);

	big = malloc(bign);
	CHECK(big);
	for (size_t i = 0; i < bign; i++)
		big[i] = (unsigned char)(i * 131 + 7);
	snprintf(path, sizeof(path), "%s/big", unit_tmpdir());
	CHECK(write_file(path, big, bign) == 0);
	CHECK(verify_file(&ctx, path, 1, sha, oid, &size) == HM_OK);
	CHECK(size == bign);

	/* the same digest from ranges, and from memory */
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	h = verify_hasher_new((int64_t)bign);
	CHECK(verify_hash_range(&ctx, fd, h, 0, 1000) == HM_OK);
	CHECK(verify_hash_range(&ctx, fd, h, 1000, 0) == HM_OK);
	CHECK(verify_hash_range(&ctx, fd, h, 1000, bign - 1000) == HM_OK);
	{
		char oid2[41];
		verify_hasher_final(h, sha2, oid2);
		CHECK_STR(sha, sha2);
		CHECK_STR(oid, oid2);
	}
	verify_hasher_free(h);
	h = verify_hasher_new(-1);
	verify_hasher_update(h, big, bign);
	verify_hasher_final(h, sha2, NULL);
	verify_hasher_free(h);
	CHECK_STR(sha, sha2);

	/* a range past the end is a size mismatch */
	h = verify_hasher_new(-1);
	CHECK(verify_hash_range(&ctx, fd, h, bign - 10, 20) == HM_ERR_CORRUPT);
	verify_hasher_free(h);
	close(fd);
	free(big);
}
