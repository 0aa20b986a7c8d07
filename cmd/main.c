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

/* The global options, any command's. */
struct global_vals {
	const char *store, *endpoint, *token;
	int json, quiet, verbose, no_truncate, help;
};

static const struct cmd_opt global_opts[] = {
	CMD_OPT_STR(struct global_vals, store, "store", 0, "DIR", "store directory or s3://BUCKET[/PREFIX] (default $HUBMIRROR_HOME, $XDG_DATA_HOME/hubmirror, ~/.local/share/hubmirror)"),
	CMD_OPT_STR(struct global_vals, endpoint, "endpoint", 0, "URL", "hub to talk to (default $HF_ENDPOINT or https://huggingface.co)"),
	CMD_OPT_STR(struct global_vals, token, "token", 0, "TOKEN", "access token (default $HF_TOKEN, $HF_TOKEN_PATH, $HF_HOME/token)"),
	CMD_OPT_FLAG(struct global_vals, json, "json", 0, "machine-readable output on stdout"),
	CMD_OPT_FLAG(struct global_vals, quiet, "quiet", 'q', "no progress or summaries (errors only)"),
	CMD_OPT_FLAG(struct global_vals, verbose, "verbose", 'v', "log each HTTP request on stderr (also HF_DEBUG=1)"),
	CMD_OPT_FLAG(struct global_vals, no_truncate, "no-truncate", 0, "tables show long names whole (default: cut to the terminal's width)"),
	CMD_OPT_FLAG(struct global_vals, help, "help", 'h', "show help"),
	CMD_OPT_END,
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

static const struct cmd_opt *find_opt(const struct cmd_opt *o, const char *name, size_t nlen, char shortname)
{
	for (int i = 0; o && o[i].name; i++)
		if ((name && strlen(o[i].name) == nlen && !strncmp(o[i].name, name, nlen)) ||
		    (!name && shortname && o[i].shortname == shortname))
			return &o[i];
	return NULL;
}

/* Stores val (NULL for a flag) into the field of option o in vals. */
static int set_opt(const struct cmd *c, const struct cmd_opt *o, void *vals, const char *val)
{
	char *field = (char *)vals + o->off;
	const char **str = (const char **)(void *)field;
	struct cmd_list *list = (struct cmd_list *)(void *)field;
	switch (o->type) {
	case CMD_OPT_T_FLAG:
		*(int *)(void *)field = 1;
		break;
	case CMD_OPT_T_STR:
		if (*str && strcmp(*str, val))
			return cmd_usage_error(c, "option '--%s' given twice", o->name);
		*str = val;
		break;
	case CMD_OPT_T_LIST:
		if (list->n == CMD_MAX_VALUES)
			return cmd_usage_error(c, "option '--%s' given too many times", o->name);
		list->v[list->n++] = val;
		break;
	}
	return 0;
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

/* Parses argv for one command: its own options into a->o, the global ones into g. */
static int parse(const struct cmd *c, int argc, char **argv, struct cmd_args *a, struct global_vals *g)
{
	int only_pos = 0, rc;
	for (int i = 0; i < argc; i++) {
		char *s = argv[i];
		const struct cmd_opt *o = NULL;
		void *into = a->o;
		const char *val = NULL;
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
			o = find_opt(c ? c->opts : NULL, name, nlen, 0);
			if (!o) {
				o = find_opt(global_opts, name, nlen, 0);
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
			o = find_opt(c ? c->opts : NULL, NULL, 0, s[1]);
			if (!o) {
				o = find_opt(global_opts, NULL, 0, s[1]);
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
		if ((rc = set_opt(c, o, into, val)))
			return rc;
	}
	return 0;
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
	const char *s, *at, **rev = NULL;
	struct stat sb;
	int is = 0;
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
		if (!strcmp(c->opts[i].name, "revision") && c->opts[i].type == CMD_OPT_T_STR)
			rev = (const char **)(void *)((char *)a->o + c->opts[i].off);
	if (!rev)
		return 0;
	if (!at[1])
		return cmd_usage_error(c, "nothing after '@' in '%s': expected REPO@REVISION", a->pos[0]);
	if (*rev && strcmp(*rev, at + 1))
		return cmd_usage_error(c, "two revisions: '@%s' and --revision %s", at + 1, *rev);
	*rev = at + 1;
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

/* The command line: a holds the command's options. */
static int run_main(int argc, char **argv, struct cmd_args *a)
{
	struct global_vals gv, *g = &gv;
	struct cmd_env env;
	const struct cmd *c = NULL;
	char storebuf[4096], repobuf[512];
	int rc, ci = -1;
	struct sigaction sa;

	memset(&env, 0, sizeof(env));
	memset(&gv, 0, sizeof(gv));
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
		/* freed by main: the command reads it to the end */
		a->o = calloc(1, c && c->opts_size ? c->opts_size : 1);
		a->opts = c ? c->opts : NULL;
		if (!rest || !a->o) {
			fprintf(stderr, "hubmirror: error: out of memory\n");
			free(rest);
			return 1;
		}
		for (int i = 1; i < argc; i++)
			if (i != ci)
				rest[n++] = argv[i];
		rc = parse(c, n, rest, a, g);
		free(rest);
		if (rc)
			return json_usage(argc, argv, rc);
	}
	if (c && (rc = repo_habits(c, a, repobuf, sizeof(repobuf))))
		return json_usage(argc, argv, rc);
	if (g->help) {
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
	env.store_dir = g->store ? g->store : default_store(storebuf, sizeof(storebuf));
	env.endpoint = g->endpoint;
	env.token_arg = g->token;
	env.json = g->json;
	env.quiet = g->quiet;
	env.no_truncate = g->no_truncate;
	env.ctx.cancel = &cancel_flag;
	cmd_progress_init(&env, g->verbose);
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
	/* large: on the heap, not the stack */
	struct cmd_args *a = calloc(1, sizeof(*a));
	int rc = a ? run_main(argc, argv, a) : 1;
	if (!a)
		fprintf(stderr, "hubmirror: error: out of memory\n");
	else
		free(a->o); /* the command's options, which run_main allocated */
	free(a);
	return rc;
}
