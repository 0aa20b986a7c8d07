/* main.c - argv parsing, global options, help, and the command table. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cmd.h"

#define HM_VERSION "0.1.0"

static const struct cmd *const commands[] = {
	&cmd_pull, &cmd_ls, &cmd_verify, &cmd_checkout, &cmd_rm, &cmd_gc, &cmd_stats, &cmd_du, &cmd_serve, &cmd_sync,
	&cmd_export, &cmd_import, &cmd_inspect, &cmd_convert, &cmd_run, &cmd_smoke, &cmd_rebuild_index,
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static volatile sig_atomic_t cancel_flag;

static void on_signal(int sig)
{
	(void)sig;
	cancel_flag = 1;
}

static const struct cmd_opt global_opts[] = {
	{"store", 0, "DIR", 0, "store directory or s3://BUCKET[/PREFIX] (default $HUBMIRROR_HOME, $XDG_DATA_HOME/hubmirror, ~/.local/share/hubmirror)"},
	{"endpoint", 0, "URL", 0, "hub to talk to (default $HF_ENDPOINT or https://huggingface.co)"},
	{"token", 0, "TOKEN", 0, "access token (default $HF_TOKEN, $HF_TOKEN_PATH, $HF_HOME/token)"},
	{"json", 0, NULL, 0, "machine-readable output on stdout"},
	{"quiet", 'q', NULL, 0, "no progress or summaries (errors only)"},
	{"verbose", 'v', NULL, 0, "log each HTTP request on stderr (also HF_DEBUG=1)"},
	{"no-truncate", 0, NULL, 0, "tables show long names whole (default: cut to the terminal's width)"},
	{"help", 'h', NULL, 0, "show help"},
	{NULL, 0, NULL, 0, NULL},
};

static void print_opts(FILE *f, const struct cmd_opt *o)
{
	for (; o && o->name; o++) {
		char left[64];
		if (o->shortname)
			snprintf(left, sizeof(left), "-%c, --%s%s%s", o->shortname, o->name, o->arg ? " " : "",
				 o->arg ? o->arg : "");
		else
			snprintf(left, sizeof(left), "    --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
		fprintf(f, "  %-26s %s%s\n", left, o->help, o->repeat ? " (repeatable)" : "");
	}
}

static void main_help(FILE *f)
{
	fprintf(f, "usage: hubmirror [--store DIR] <command> [options]\n\n"
		   "A Hugging Face Hub mirror and download manager: verified, resumable,\n"
		   "parallel downloads into a content-addressed store.\n\ncommands:\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  %-13s %s\n", commands[i]->name, commands[i]->summary);
	fprintf(f, "\nglobal options (any command):\n");
	print_opts(f, global_opts);
	fprintf(f, "  %-10s %s\n", "completion", "print a bash or zsh completion script (hubmirror completion bash)");
	fprintf(f, "\nexit status: 0 success, 1 failure, 2 usage error, 130 interrupted.\n"
		   "'hubmirror <command> --help' shows a command's options; 'hubmirror --man' prints\n"
		   "the man page. The token: HF_TOKEN or $HF_HOME/token (--token stays in shell history).\n");
}

static void cmd_help(const struct cmd *c, FILE *f)
{
	fprintf(f, "usage: hubmirror %s %s\n\n%s\n", c->name, c->usage, c->summary);
	if (c->details)
		fprintf(f, "\n%s\n", c->details);
	if (c->opts && c->opts->name) {
		fprintf(f, "\noptions:\n");
		print_opts(f, c->opts);
	}
	fprintf(f, "\nglobal options:\n");
	print_opts(f, global_opts);
}

static const struct cmd_opt *find_opt(const struct cmd_opt *o, const char *name, size_t nlen, char shortname, int *idx)
{
	for (int i = 0; o && o[i].name; i++)
		if ((name && strlen(o[i].name) == nlen && !strncmp(o[i].name, name, nlen)) ||
		    (!name && shortname && o[i].shortname == shortname)) {
			*idx = i;
			return &o[i];
		}
	return NULL;
}

/* Options of `hf download` / huggingface-cli with an equivalent here. */
static const char *const hf_habits[][2] = {
	{"cache-dir", "the store is set with --store DIR (or HUBMIRROR_HOME); for a Hugging Face cache use --to DIR --layout hf-cache"},
	{"max-workers", "use --connections N (parallel connections in total)"},
	{"force-download", "every file is verified already; to fetch a file again use 'hubmirror verify --repair', or 'hubmirror rm' then pull"},
	{"local-dir-use-symlinks", "checked out files are hard links to the store; use --copy for independent copies"},
	{"resume-download", "downloads always resume"},
	{"repo-id", "the repository is the first argument: hubmirror pull ORG/NAME"},
};

/* Parses argv for one command: its own options and the global ones. */
static int parse(const struct cmd *c, int argc, char **argv, struct cmd_args *a, struct cmd_args *g)
{
	int only_pos = 0;
	for (int i = 0; i < argc; i++) {
		char *s = argv[i];
		const struct cmd_opt *o = NULL;
		struct cmd_args *into = a;
		const char *val = NULL;
		int idx = 0;
		if (only_pos || s[0] != '-' || !s[1]) {
			if (a->npos == CMD_MAX_VALUES)
				return cmd_usage_error(c, "too many arguments");
			a->pos[a->npos++] = s;
			continue;
		}
		if (!strcmp(s, "--")) {
			only_pos = 1;
			continue;
		}
		if (s[1] == '-') {
			const char *name = s + 2, *eq = strchr(name, '=');
			size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
			o = find_opt(c ? c->opts : NULL, name, nlen, 0, &idx);
			if (!o) {
				o = find_opt(global_opts, name, nlen, 0, &idx);
				into = g;
			}
			for (size_t k = 0; !o && k < sizeof(hf_habits) / sizeof(hf_habits[0]); k++)
				if (strlen(hf_habits[k][0]) == nlen && !strncmp(name, hf_habits[k][0], nlen))
					return cmd_usage_error(c, "--%s is not an option of hubmirror: %s", hf_habits[k][0],
							       hf_habits[k][1]);
			if (!o)
				return cmd_usage_error(c, "unknown option '--%.*s'", (int)nlen, name);
			if (eq) {
				if (!o->arg)
					return cmd_usage_error(c, "option '--%s' takes no value", o->name);
				val = eq + 1;
			}
		} else {
			if (s[2])
				return cmd_usage_error(c, "unknown option '%s' (combine no short options)", s);
			o = find_opt(c ? c->opts : NULL, NULL, 0, s[1], &idx);
			if (!o) {
				o = find_opt(global_opts, NULL, 0, s[1], &idx);
				into = g;
			}
			if (!o)
				return cmd_usage_error(c, "unknown option '%s'", s);
		}
		if (o->arg && !val) {
			if (i + 1 >= argc)
				return cmd_usage_error(c, "option '--%s' needs a value (%s)", o->name, o->arg);
			val = argv[++i];
		}
		if (!o->arg)
			val = "1";
		if (into->nval[idx] && !o->repeat && o->arg && strcmp(into->val[idx][into->nval[idx] - 1], val))
			return cmd_usage_error(c, "option '--%s' given twice", o->name);
		if (into->nval[idx] == CMD_MAX_VALUES)
			return cmd_usage_error(c, "option '--%s' given too many times", o->name);
		into->val[idx][into->nval[idx]++] = val;
	}
	return 0;
}

int cmd_dispatch(struct cmd_env *env, const struct cmd *c, int argc, char **argv)
{
	/* heap, not static: a command may dispatch another */
	struct cmd_args *a = calloc(1, sizeof(*a)), *g = calloc(1, sizeof(*g));
	int rc = 1;
	if (a && g) {
		rc = parse(c, argc, argv, a, g);
		if (!rc) {
			a->opts = c->opts;
			rc = c->run(env, a);
		}
	}
	free(a);
	free(g);
	return rc;
}

/* A usage error with --json on the line: also a JSON error object on
 * stdout (the message is on stderr already). */
static int json_usage(int argc, char **argv, int rc)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--json")) {
			cmd_json_error("usage", "invalid command line (see stderr)");
			break;
		}
	return rc;
}

/* Levenshtein distance of two short words (capped at 32 characters). */
static int distance(const char *a, const char *b)
{
	int la = (int)strnlen(a, 32), lb = (int)strnlen(b, 32), d[33][33];
	for (int i = 0; i <= la; i++)
		d[i][0] = i;
	for (int j = 0; j <= lb; j++)
		d[0][j] = j;
	for (int i = 1; i <= la; i++)
		for (int j = 1; j <= lb; j++) {
			int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]), del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
			d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
		}
	return d[la][lb];
}

/* "unknown command 'x'", with the nearest one when it is near (git's help.autocorrect). */
static int unknown_command(const char *name)
{
	static const char *const aliases[][2] = {
		{"download", "pull"}, {"get", "pull"}, {"fetch", "pull"}, {"list", "ls"}, {"remove", "rm"},
		{"delete", "rm"}, {"check", "verify"}, {"fsck", "verify"}, {"scan-cache", "ls"}, {"cache", "ls"},
	};
	const char *best = NULL;
	int bd = 99;
	for (size_t k = 0; k < sizeof(aliases) / sizeof(aliases[0]); k++)
		if (!strcmp(name, aliases[k][0]))
			best = aliases[k][1], bd = 0;
	for (size_t k = 0; k < NCOMMANDS && bd; k++) {
		int d = distance(name, commands[k]->name);
		if (d < bd)
			bd = d, best = commands[k]->name;
	}
	if (best && (bd == 0 || bd <= 2 || (bd <= 3 && strlen(name) > 5)))
		fprintf(stderr, "hubmirror: unknown command '%s'; did you mean %s?\n(see 'hubmirror --help')\n", name, best);
	else
		fprintf(stderr, "hubmirror: unknown command '%s'\n(see 'hubmirror --help')\n", name);
	return 2;
}

/* Hugging Face habits for a command whose first argument is a repo:
 * hf://[datasets/]org/name, REPO@REV (as --revision REV), and a word for
 * Spaces. A local path (inspect, run, convert) is left alone. */
static int repo_habits(const struct cmd *c, struct cmd_args *a, char *buf, size_t len)
{
	static const char *const takes_repo[] = {"pull", "ls", "checkout", "rm", "inspect", "convert", "run", "smoke"};
	const char *s, *at;
	struct stat sb;
	int is = 0, ri = -1;
	for (size_t k = 0; k < sizeof(takes_repo) / sizeof(takes_repo[0]); k++)
		is |= !strcmp(c->name, takes_repo[k]);
	if (!is || !a->npos || stat(a->pos[0], &sb) == 0)
		return 0;
	s = a->pos[0];
	if (!strncmp(s, "hf://", 5))
		s += 5;
	if (!strncmp(s, "spaces/", 7) || !strncmp(s, "space:", 6))
		return cmd_usage_error(c, "Spaces are not supported: hubmirror mirrors models and datasets ('%s')", a->pos[0]);
	if (strlen(s) >= len)
		return cmd_usage_error(c, "repository name too long");
	snprintf(buf, len, "%s", s);
	a->pos[0] = buf;
	at = strrchr(s, '@');
	if (!at)
		return 0;
	buf[at - s] = 0;
	for (int i = 0; c->opts && c->opts[i].name; i++)
		if (!strcmp(c->opts[i].name, "revision"))
			ri = i;
	if (ri < 0)
		return 0;
	if (!at[1])
		return cmd_usage_error(c, "nothing after '@' in '%s': expected REPO@REVISION", a->pos[0]);
	if (a->nval[ri] && strcmp(a->val[ri][a->nval[ri] - 1], at + 1))
		return cmd_usage_error(c, "two revisions: '@%s' and --revision %s", at + 1, a->val[ri][a->nval[ri] - 1]);
	if (!a->nval[ri])
		a->val[ri][a->nval[ri]++] = at + 1;
	return 0;
}

static const char *default_store(char *buf, size_t len)
{
	const char *h = getenv("HUBMIRROR_HOME"), *x = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
	if (h && *h)
		return h;
	if (x && *x) {
		snprintf(buf, len, "%s/hubmirror", x);
		return buf;
	}
	snprintf(buf, len, "%s/.local/share/hubmirror", home && *home ? home : ".");
	return buf;
}

/* The command line in a (the command's options) and g (the global ones). */
static int run_main(int argc, char **argv, struct cmd_args *a, struct cmd_args *g)
{
	struct cmd_env env;
	const struct cmd *c = NULL;
	char storebuf[4096], repobuf[512];
	int rc, ci = -1;
	struct sigaction sa;

	memset(&env, 0, sizeof(env));
	/* the command is the first argument that is not a global option */
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] != '-') {
			ci = i;
			break;
		}
		if (!strcmp(argv[i], "--store") || !strcmp(argv[i], "--endpoint") || !strcmp(argv[i], "--token"))
			i++;
	}
	if (ci > 0) {
		for (size_t k = 0; k < NCOMMANDS; k++)
			if (!strcmp(commands[k]->name, argv[ci]))
				c = commands[k];
		if (!strcmp(argv[ci], "completion")) {
			if (ci + 1 < argc && !cmd_doc_completion(stdout, argv[ci + 1], commands, NCOMMANDS, global_opts))
				return 0;
			fprintf(stderr, "hubmirror: usage: hubmirror completion bash|zsh\n");
			return 2;
		}
		if (!strcmp(argv[ci], "help")) {
			if (ci + 1 < argc) {
				for (size_t k = 0; k < NCOMMANDS; k++)
					if (!strcmp(commands[k]->name, argv[ci + 1])) {
						cmd_help(commands[k], stdout);
						return 0;
					}
				return unknown_command(argv[ci + 1]);
			}
			main_help(stdout);
			return 0;
		}
		if (!c)
			return json_usage(argc, argv, unknown_command(argv[ci]));
	}
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--man")) {
			cmd_doc_man(stdout, commands, NCOMMANDS, global_opts, HM_VERSION);
			return 0;
		} else if (!strcmp(argv[i], "--version")) {
			printf("hubmirror %s\n", HM_VERSION);
			return 0;
		}
	/* parse everything but the command word */
	{
		char **rest = calloc((size_t)argc + 1, sizeof(*rest));
		int n = 0;
		if (!rest)
			return 1;
		for (int i = 1; i < argc; i++)
			if (i != ci)
				rest[n++] = argv[i];
		rc = parse(c, n, rest, a, g);
		free(rest);
		if (rc)
			return json_usage(argc, argv, rc);
	}
	a->opts = c ? c->opts : NULL;
	g->opts = global_opts;
	if (c && (rc = repo_habits(c, a, repobuf, sizeof(repobuf))))
		return json_usage(argc, argv, rc);
	if (cmd_flag(g, "help")) {
		if (c)
			cmd_help(c, stdout);
		else
			main_help(stdout);
		return 0;
	}
	if (!c) {
		main_help(stderr);
		return 2;
	}
	env.store_dir = cmd_opt(g, "store") ? cmd_opt(g, "store") : default_store(storebuf, sizeof(storebuf));
	env.endpoint = cmd_opt(g, "endpoint");
	env.token_arg = cmd_opt(g, "token");
	env.json = cmd_flag(g, "json");
	env.quiet = cmd_flag(g, "quiet");
	env.no_truncate = cmd_flag(g, "no-truncate");
	env.ctx.cancel = &cancel_flag;
	cmd_progress_init(&env, cmd_flag(g, "verbose"));
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	rc = c->run(&env, a);
	cmd_progress_end(&env);
	/* a usage error found by the command itself: --json still gets an answer */
	if (rc == 2 && env.json && !env.json_done)
		cmd_json_error("usage", "invalid command line (see stderr)");
	if (cancel_flag && rc)
		rc = 130;
	return rc;
}

int main(int argc, char **argv)
{
	/* 16 KiB each: on the heap, not the stack */
	struct cmd_args *a = calloc(1, sizeof(*a)), *g = calloc(1, sizeof(*g));
	int rc = a && g ? run_main(argc, argv, a, g) : 1;
	if (!a || !g)
		fprintf(stderr, "hubmirror: error: out of memory\n");
	free(a);
	free(g);
	return rc;
}
