/* table.c - tables that fit the terminal: columns as wide as their widest
 * cell, and when the line is wider than the terminal the flexible columns
 * (names, paths) are cut with "..." (--no-truncate shows them whole, as
 * `hf cache ls` does). Piped output is never cut. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "cmd.h"

void cmd_table_init(struct cmd_table *t, int ncols, const char *const *heads, const char *align, const char *flex)
{
	memset(t, 0, sizeof(*t));
	t->ncols = ncols > CMD_TABLE_MAXCOLS ? CMD_TABLE_MAXCOLS : ncols;
	for (int i = 0; i < t->ncols; i++) {
		t->right[i] = align && align[i] == 'r';
		t->flex[i] = flex && flex[i] == 'y';
	}
	cmd_table_row(t, heads);
}

int cmd_table_row(struct cmd_table *t, const char *const *cells)
{
	if (t->nrows == t->cap) {
		size_t nc = t->cap ? t->cap * 2 : 16;
		char **nv = realloc(t->cells, nc * (size_t)t->ncols * sizeof(*nv));
		if (!nv)
			return -1;
		t->cells = nv;
		t->cap = nc;
	}
	for (int i = 0; i < t->ncols; i++)
		t->cells[t->nrows * (size_t)t->ncols + (size_t)i] = util_strdup(cells[i] ? cells[i] : "");
	t->nrows++;
	return 0;
}

/* The width to fit, or 0 for no limit (not a terminal, or --no-truncate). */
static int table_limit(const struct cmd_env *env)
{
	struct winsize ws;
	const char *c = getenv("COLUMNS");
	if (env->no_truncate)
		return 0;
	/* one column short of the edge: a full line would wrap on some terminals */
	if (isatty(1) && ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1)
		return ws.ws_col - 1;
	if (isatty(1) && c && atoi(c) > 1)
		return atoi(c) - 1;
	return 0;
}

void cmd_table_print(const struct cmd_env *env, struct cmd_table *t, FILE *f)
{
	int w[CMD_TABLE_MAXCOLS] = {0}, total = 0, limit = table_limit(env);
	for (size_t r = 0; r < t->nrows; r++)
		for (int i = 0; i < t->ncols; i++) {
			const char *s = t->cells[r * (size_t)t->ncols + (size_t)i];
			int len = s ? (int)strlen(s) : 0;
			if (len > w[i])
				w[i] = len;
		}
	for (int i = 0; i < t->ncols; i++)
		total += w[i] + (i ? 2 : 0);
	/* shrink the widest flexible column, one column at a time, down to 10 */
	while (limit && total > limit) {
		int best = -1;
		for (int i = 0; i < t->ncols; i++)
			if (t->flex[i] && w[i] > 10 && (best < 0 || w[i] > w[best]))
				best = i;
		if (best < 0)
			break;
		w[best]--;
		total--;
	}
	for (size_t r = 0; r < t->nrows; r++) {
		for (int i = 0; i < t->ncols; i++) {
			const char *s = t->cells[r * (size_t)t->ncols + (size_t)i];
			int len = s ? (int)strlen(s) : 0, last = i + 1 == t->ncols;
			if (!s)
				s = "";
			if (len > w[i])
				fprintf(f, "%.*s...", w[i] - 3, s);
			else if (t->right[i])
				fprintf(f, "%*s", w[i], s);
			else if (last)
				fputs(s, f); /* no trailing blanks */
			else
				fprintf(f, "%-*s", w[i], s);
			fputs(last ? "\n" : "  ", f);
		}
	}
}

void cmd_table_release(struct cmd_table *t)
{
	for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	memset(t, 0, sizeof(*t));
}
