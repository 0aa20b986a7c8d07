/* main.c - runs every registered unit test, each in its own temp dir. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "unit.h"

static struct unit_case *cases;
static int failed_now;
static char tmpdir[256];

void unit_register(struct unit_case *c)
{
	struct unit_case **p = &cases;
	while (*p && strcmp((*p)->name, c->name) < 0)
		p = &(*p)->next;
	c->next = *p;
	*p = c;
}

void unit_fail(const char *file, int line, const char *expr)
{
	printf("FAIL %s:%d: %s\n", file, line, expr);
	failed_now = 1;
}

const char *unit_tmpdir(void)
{
	return tmpdir;
}

int main(int argc, char **argv)
{
	int passed = 0, failed = 0;
	for (struct unit_case *c = cases; c; c = c->next) {
		if (argc > 1 && strcmp(argv[1], c->name) != 0)
			continue;
		snprintf(tmpdir, sizeof(tmpdir), "/tmp/hm-unit-XXXXXX");
		if (!mkdtemp(tmpdir)) {
			perror("mkdtemp");
			return 1;
		}
		failed_now = 0;
		fflush(stdout);
		c->fn();
		if (failed_now) {
			printf("FAIL %s\n", c->name);
			failed++;
		} else {
			printf("ok %s\n", c->name);
			passed++;
		}
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "chmod -R u+w %s 2>/dev/null; rm -rf %s", tmpdir, tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", tmpdir);
	}
	printf("unit: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
