/* test_fetch.c - the resume state (written vs synced ranges under a boot id)
 * and the redirect rule's refusals that need no network. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "unit.h"
#include "../../fetch/resume.h"
#include "../../fetch/fetch-int.h"

static void state_path(char *buf, size_t cap)
{
	snprintf(buf, cap, "/tmp/hm-unit-state-%ld", (long)getpid());
}

UNIT_TEST(fetch_state_written_ranges_need_the_same_boot)
{
	char path[128];
	struct fetch_range done[] = {{0, 100}}, written[] = {{0, 300}, {500, 600}};
	struct fetch_range *r = NULL;
	size_t n = 0;
	state_path(path, sizeof(path));
	CHECK(fetch_state_save(path, 1000, "boot-a", done, 1, written, 2, 0) == 0);
	/* same boot: the written ranges (the page cache still holds them) */
	CHECK(fetch_state_load(path, 1000, "boot-a", &r, &n) == 0);
	CHECK(n == 2 && r[0].start == 0 && r[0].end == 300 && r[1].start == 500 && r[1].end == 600);
	free(r);
	/* another boot: only what was fdatasync'd */
	CHECK(fetch_state_load(path, 1000, "boot-b", &r, &n) == 0);
	CHECK(n == 1 && r[0].end == 100);
	free(r);
	CHECK(fetch_state_load(path, 1000, "", &r, &n) == 0);
	CHECK(n == 1 && r[0].end == 100);
	free(r);
	/* another size: not ours */
	CHECK(fetch_state_load(path, 999, "boot-a", &r, &n) == -1);
	/* durable save, read back */
	CHECK(fetch_state_save(path, 1000, "boot-a", written, 2, written, 2, 1) == 0);
	CHECK(fetch_state_load(path, 1000, "boot-b", &r, &n) == 0);
	CHECK(n == 2);
	free(r);
	unlink(path);
}

UNIT_TEST(fetch_state_v1_and_damage)
{
	char path[128];
	struct fetch_range *r = NULL;
	size_t n = 0;
	FILE *f;
	state_path(path, sizeof(path));
	f = fopen(path, "w");
	CHECK(f != NULL);
	fputs("hubmirror-partial 1\nsize 1000\ndone 0 10\n", f);
	fclose(f);
	CHECK(fetch_state_load(path, 1000, "any", &r, &n) == 0);
	CHECK(n == 1 && r[0].end == 10);
	free(r);
	f = fopen(path, "w");
	fputs("hubmirror-partial 2\nsize 1000\nboot x\nwritten 0 10\nwritten 5 20\n", f);
	fclose(f);
	CHECK(fetch_state_load(path, 1000, "x", &r, &n) == -1); /* overlapping */
	f = fopen(path, "w");
	fputs("hubmirror-partial 1\nsize 1000\nwritten 0 10\n", f);
	fclose(f);
	CHECK(fetch_state_load(path, 1000, "x", &r, &n) == -1); /* v1 has no written ranges */
	unlink(path);
}

UNIT_TEST(fetch_boot_id_reads_the_kernel)
{
	char b[FETCH_BOOT_ID_MAX];
	fetch_boot_id(b);
	if (access("/proc/sys/kernel/random/boot_id", R_OK) == 0)
		CHECK(strlen(b) >= 32);
}

UNIT_TEST(fetch_follow_names_refused_schemes)
{
	struct hm_ctx ctx = {0};
	char *out = NULL;
	int count = 0;
	CHECK(fetch_follow(&ctx, "http://a.example/x", "file:///etc/passwd", &count, 10, "f", &out) == HM_ERR_BAD_INPUT);
	CHECK(out == NULL && strstr(ctx.errmsg, "'file'") && strstr(ctx.errmsg, "file:///etc/passwd"));
	count = 0;
	CHECK(fetch_follow(&ctx, "http://a.example/x", "/y?z=1", &count, 10, "f", &out) == HM_OK);
	CHECK_STR(out, "http://a.example/y?z=1");
	free(out);
	count = 10;
	CHECK(fetch_follow(&ctx, "http://a.example/x", "/y", &count, 10, "f", &out) == HM_ERR_HTTP);
	CHECK(strstr(ctx.errmsg, "too many redirects") != NULL);
}
