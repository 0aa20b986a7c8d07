/* main.c - runs every registered unit test, each in its own temp dir. */
#include <stdint.h>
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

int unit_in_file_mapping(const void *p)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[4096];
	int r = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long a, b;
		char path[4096] = "";
		if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %4095s", &a, &b, path) >= 2 && (uintptr_t)p >= a &&
		    (uintptr_t)p < b) {
			r = path[0] == '/';
			break;
		}
	}
	fclose(f);
	return r;
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
