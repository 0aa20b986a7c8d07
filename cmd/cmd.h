/* cmd.h - the command table, parsed arguments and shared printing helpers. */
#ifndef CMD_H
#define CMD_H

#include <jansson.h>
#include <stdio.h>
#include "../util/hm.h"
#include "../util/util.h"
#include "../store/store.h"
#include "../fetch/fetch.h"

#include <stddef.h>

#define CMD_MAX_VALUES 64

/* What an option's field holds (git's OPT_BOOL, OPT_STRING, OPT_STRING_LIST). */
enum cmd_opt_type {
	CMD_OPT_T_FLAG, /* int: 1 when given */
	CMD_OPT_T_STR,  /* const char *: the value, NULL when not given */
	CMD_OPT_T_LIST, /* struct cmd_list: every value, in order (repeatable) */
};

/* The values of a repeatable option. */
struct cmd_list {
	const char *v[CMD_MAX_VALUES];
	int n;
};

/* One option of a command, declared once and bound to a field of the
 * command's options struct; --help, the man page and the completions are
 * generated from it. Declare them with CMD_OPT_FLAG / _STR / _LIST, which
 * check the field's name and type when compiling. */
struct cmd_opt {
	const char *name;    /* long name without dashes */
	char shortname;      /* 0 if none */
	const char *arg;     /* argument name, NULL for a flag */
	int repeat;          /* may be given several times */
	const char *help;
	enum cmd_opt_type type;
	size_t off;          /* of its field in the options struct */
};

/* offsetof(T, f), and a compile error unless field f of T has type FT. */
#define CMD_OFF(T, f, FT) (offsetof(T, f) + 0 * sizeof((FT *)0 - &((T *)0)->f))
#define CMD_OPT_FLAG(T, f, name, sh, help) {name, sh, NULL, 0, help, CMD_OPT_T_FLAG, CMD_OFF(T, f, int)}
#define CMD_OPT_STR(T, f, name, sh, arg, help) {name, sh, arg, 0, help, CMD_OPT_T_STR, CMD_OFF(T, f, const char *)}
#define CMD_OPT_LIST(T, f, name, sh, arg, help) {name, sh, arg, 1, help, CMD_OPT_T_LIST, CMD_OFF(T, f, struct cmd_list)}
#define CMD_OPT_END {NULL, 0, NULL, 0, NULL, CMD_OPT_T_FLAG, 0}

/* A command's arguments: the positional ones, and its options struct (o,
 * filled as opts says; the command casts it to its own type). */
struct cmd_args {
	const char *pos[CMD_MAX_VALUES];
	int npos;
	void *o;
	const struct cmd_opt *opts;
};

/* The network options (CMD_NET_OPTS) of pull, sync, verify and serve. */
struct cmd_net_vals {
	const char *connections, *retries, *timeout, *metadata_timeout;
	int allow_private_redirects;
};

/* The BitTorrent options (CMD_P2P_OPTS) of pull and sync. */
struct cmd_p2p_vals {
	int p2p;
	const char *port, *upload_rate, *stall, *seed_time;
};

/* How progress is shown on stderr (cmd/progress.c). */
enum cmd_progress_mode { CMD_PROGRESS_NONE, CMD_PROGRESS_BAR, CMD_PROGRESS_PLAIN };
struct cmd_progress {
	enum cmd_progress_mode mode; /* none (-q, HF_HUB_DISABLE_PROGRESS_BARS), bar (tty), plain lines */
	int drawn;                   /* a bar is on screen: erase it before printing */
	double t_start, last_plain, interval;
	char label[300];             /* what is being pulled: [datasets/]org/name */
	int files_here, files_total; /* of the revision being pulled (HM_EV_INFO "files") */
};

/* Everything a command needs from the global options. */
struct cmd_env {
	struct hm_ctx ctx;
	const char *store_dir;   /* resolved */
	const char *endpoint;    /* NULL = HF_ENDPOINT or default */
	const char *token_arg;   /* --token */
	int json, quiet;
	int json_done;           /* a JSON answer (or error object) is on stdout */
	int error_printed;       /* the error's line is on stderr already */
	int no_truncate;         /* tables show long cells whole */
	int progress;            /* a progress bar is drawn on stderr (a tty) */
	struct cmd_progress prog;
};

struct cmd {
	const char *name;
	const char *usage;       /* after "hubmirror NAME " */
	const char *summary;
	const char *details;     /* extra help text, may be NULL */
	const struct cmd_opt *opts;
	size_t opts_size;        /* of the struct opts fills (a->o) */
	int (*run)(struct cmd_env *env, struct cmd_args *a);
};

/* The name of the option bound to field (a pointer into a->o), for messages. */
const char *cmd_opt_name(const struct cmd_args *a, const void *field);

/* Prints "hubmirror: error: <ctx->errmsg or strerror>" and returns the exit code for err. */
int cmd_error(struct cmd_env *env, enum hm_err err);
/* Prints a usage error for cmd and returns 2. */
int cmd_usage_error(const struct cmd *c, const char *fmt, ...) HM_PRINTF(2, 3);

/* Opens the store of --store for a command that writes an existing store
 * (a directory that is not a store is an error); cmd_open_store_mode for
 * reading (STORE_READ) or creating (STORE_CREATE: pull, import, sync). */
enum hm_err cmd_open_store(struct cmd_env *env, struct store **st) HM_MUST_CHECK;
enum hm_err cmd_open_store_mode(struct cmd_env *env, enum store_mode mode, struct store **st) HM_MUST_CHECK;
/* The line a listing starts with in human output: "store: DIR" (plus
 * "(read-only)" when opened so). */
void cmd_print_store(const struct cmd_env *env, const struct store *st);
/* After "not found in the store": appends "; a dataset of that name is
 * stored: datasets/org/name" (or a model) to the message when one is. */
void cmd_hint_type(struct cmd_env *env, struct store *st, const char *type, const char *repo);
/* The client from --endpoint/HF_ENDPOINT and the token (--token, HF_TOKEN,
 * HF_TOKEN_PATH, $HF_HOME/token). */
enum hm_err cmd_client(struct cmd_env *env, const struct cmd_args *a, const struct cmd_net_vals *n,
		       struct fetch_client **fc) HM_MUST_CHECK;
/* The token from --token, HF_TOKEN, HF_TOKEN_PATH or $HF_HOME/token; NULL if
 * none. The caller wipes and frees it. */
char *cmd_token(const struct cmd_env *env);
/* The Hugging Face cache your tools read: $HF_HUB_CACHE, else $HF_HOME/hub,
 * else ~/.cache/huggingface/hub (what --layout hf-cache writes without --to). */
const char *cmd_hf_cache_dir(char *buf, size_t len);
/* Parses the int option of field v (a pointer into a->o) into *out, def when
 * not given; returns -1 and prints on error. */
int cmd_int_opt(const struct cmd_args *a, const char *const *v, int def, int min, int max, int *out);
/* Fills the network options of CMD_NET_OPTS (and their sources, for
 * messages): --connections, --retries, --timeout / HF_HUB_DOWNLOAD_TIMEOUT,
 * --metadata-timeout / HF_HUB_ETAG_TIMEOUT, --allow-private-redirects.
 * Returns 0, or -1 after printing what is wrong. */
struct fetch_client_opts;
int cmd_net_opts(const struct cmd_args *a, const struct cmd_net_vals *n, struct fetch_client_opts *o);
/* The --offline flag, or HF_HUB_OFFLINE set to 1/true/yes/on (as huggingface_hub reads it). */
int cmd_offline(int flag);

/* A JSON string of n bytes of text that may not be valid UTF-8 (model
 * output, untrusted names): invalid sequences become U+FFFD. */
json_t *cmd_json_text(const char *s, size_t n);
/* The same as a malloc'd NUL-terminated string (NULL: out of memory). */
char *cmd_valid_text(const char *s, size_t n);
/* A stored revision checked out (hard links) under the store's tmp/run/ for
 * the engine to mmap; out receives the directory. */
enum hm_err cmd_model_dir(struct cmd_env *env, struct store *st, const char *type, const char *repo,
			  const char *commit, char *out, size_t len) HM_MUST_CHECK;
/* After a pull: convert to GGUF of type conv (if non-NULL; stored as an
 * artifact) and/or smoke-test the conversion or the revision (recorded in
 * the index). verdict (may be NULL) receives a short status. Returns the
 * exit code (0 when everything asked for passed). */
int cmd_post_pull(struct cmd_env *env, struct store *st, const char *type, const char *repo, const char *commit,
		  const char *conv, int smoke, char *verdict, size_t vlen);
struct eng_smoke_opts;
struct eng_smoke_result;
/* Smoke-tests the model at path (pull --smoke, sync --smoke, smoke): a model
 * that cannot even load fails the test (res->pass = 0, the reason from the
 * error); only running out of memory or an interrupt is an error. res is
 * the caller's to release (eng_smoke_release), on error too. */
enum hm_err cmd_smoke_model(struct cmd_env *env, const char *path, const struct eng_smoke_opts *o,
			    struct eng_smoke_result *res) HM_MUST_CHECK;
/* Records res for a stored revision (artifact_sha256: the GGUF conversion
 * tested, or NULL for the revision itself), which `ls` shows. */
enum hm_err cmd_smoke_record(struct cmd_env *env, struct store *st, const char *type, const char *repo,
			     const char *commit, const char *artifact_sha256, const char *label,
			     const struct eng_smoke_result *res) HM_MUST_CHECK;
/* How `run` generates: tokens at most, sampling, and --raw (no chat template). */
struct cmd_gen {
	size_t n;
	float temp, top_p;
	uint64_t seed;
	int raw;
};
struct eng_state;
struct eng_tok;
/* `run` without a prompt on a terminal (cmd/chat.c): a conversation with the
 * model at path (its chat template unless g->raw or it has none: then each
 * line is a prompt of its own) until /bye or end of input. Returns the exit
 * code. */
int cmd_interactive(struct cmd_env *env, const char *path, struct eng_state *s, const struct eng_tok *t,
		    const struct cmd_gen *g);
struct eng_run;
/* `run --chat` (cmd/chat.c): the prompt as one user turn (after system, if
 * not NULL) rendered with the model's chat template and generated until an
 * end-of-turn token; streamed unless quiet. r is the caller's
 * (eng_run_release), r->prompt the ids fed to the engine. */
enum hm_err cmd_chat_once(struct cmd_env *env, const char *path, struct eng_state *s, const struct eng_tok *t,
			  const struct cmd_gen *g, const char *system, const char *user, int quiet,
			  struct eng_run *r) HM_MUST_CHECK;
struct mirror_artifact;
/* Prints what `convert` prints about a stored conversion of (rtype, repo,
 * commit) (JSON with --json). */
void cmd_report_artifact(struct cmd_env *env, const char *rtype, const char *repo, const char *commit,
			 const struct mirror_artifact *a, const char *output);
/* Version of every command's JSON (docs/json.md); each object printed
 * carries it as "schema". Raise it when a key changes meaning or goes. */
#define CMD_JSON_SCHEMA 2
/* Prints a JSON value on stdout (and frees it); an object gets "schema". */
void cmd_print_json(json_t *j);
/* Stable machine name of an error ("repo_not_found", "gated", ...). */
const char *cmd_err_code(enum hm_err err);
/* Prints {"schema": N, "error": {"code": code, "message": message}} on stdout. */
void cmd_json_error(const char *code, const char *message);
/* Progress on stderr, driven by hm_event (cmd/progress.c): sets the mode
 * from -q, HF_HUB_DISABLE_PROGRESS_BARS and whether stderr is a tty, the
 * request log from --verbose / HF_DEBUG, and installs the event handler. */
void cmd_progress_init(struct cmd_env *env, int verbose);
/* Names what the next progress line is about. */
void cmd_progress_label(struct cmd_env *env, const char *type, const char *repo);
void cmd_progress_event(void *ud, const struct hm_event *ev);
/* Erases a drawn bar (before printing anything else). */
void cmd_progress_end(struct cmd_env *env);
/* Columns of the terminal (TIOCGWINSZ on stderr or stdout, else $COLUMNS, else 80). */
int cmd_term_width(void);
const char *cmd_rate(double bytes_per_s, char *buf, size_t len);

/* A table that fits the terminal (cmd/table.c): 'r' in align right-aligns a
 * column, 'y' in flex lets it be cut with "..." when the line is too wide
 * for the terminal (never when piped, nor with --no-truncate). */
#define CMD_TABLE_MAXCOLS 16
struct cmd_table {
	int ncols;
	int right[CMD_TABLE_MAXCOLS], flex[CMD_TABLE_MAXCOLS];
	char **cells; /* row-major; row 0 is the header */
	size_t nrows, cap;
};
void cmd_table_init(struct cmd_table *t, int ncols, const char *const *heads, const char *align, const char *flex);
int cmd_table_row(struct cmd_table *t, const char *const *cells);
void cmd_table_print(const struct cmd_env *env, struct cmd_table *t, FILE *f);
void cmd_table_release(struct cmd_table *t);

/* The man page and bash/zsh completions from the command table (doc.c);
 * cmd_doc_completion returns -1 for an unknown shell. */
void cmd_doc_man(FILE *f, const struct cmd *const *cmds, size_t n, const struct cmd_opt *global, const char *version);
int cmd_doc_completion(FILE *f, const char *shell, const struct cmd *const *cmds, size_t n,
		       const struct cmd_opt *global);

extern const struct cmd cmd_pull, cmd_ls, cmd_verify, cmd_checkout, cmd_rm, cmd_gc, cmd_stats, cmd_serve, cmd_sync, cmd_run, cmd_smoke;
extern const struct cmd cmd_export, cmd_import;
extern const struct cmd cmd_inspect;
extern const struct cmd cmd_convert;
extern const struct cmd cmd_du;
extern const struct cmd cmd_rebuild_index;

/* The network options of a command whose options struct T has a
 * struct cmd_net_vals net. */
#define CMD_NET_OPTS(T)                                                                                    \
	CMD_OPT_STR(T, net.connections, "connections", 'c', "N", "parallel connections in total (default 8)"), \
	CMD_OPT_STR(T, net.retries, "retries", 0, "N", "failures in a row tolerated per transfer (default 5)"), \
	CMD_OPT_STR(T, net.timeout, "timeout", 0, "SECS", "replace a download connection that sends nothing for SECS (default 30; HF_HUB_DOWNLOAD_TIMEOUT)"), \
	CMD_OPT_STR(T, net.metadata_timeout, "metadata-timeout", 0, "SECS", "retry an API call that connects or answers nothing for SECS (default 10; HF_HUB_ETAG_TIMEOUT)"), \
	CMD_OPT_FLAG(T, net.allow_private_redirects, "allow-private-redirects", 0, "follow redirects to loopback/private addresses the endpoint is not in")

/* BitTorrent options of pull and sync (cmd/p2p.c), for an options struct T
 * with a struct cmd_p2p_vals p2p. */
#define CMD_P2P_OPTS(T)                                                                                    \
	CMD_OPT_FLAG(T, p2p.p2p, "p2p", 0, "take LFS blobs from the lab's BitTorrent swarm (the endpoint: serve --p2p)"), \
	CMD_OPT_STR(T, p2p.port, "p2p-port", 0, "PORT", "TCP port peers connect to (default 6881)"),        \
	CMD_OPT_STR(T, p2p.upload_rate, "p2p-upload-rate", 0, "RATE", "cap on bytes/s sent to peers, e.g. 20M (default none)"), \
	CMD_OPT_STR(T, p2p.stall, "p2p-stall", 0, "SECS", "HTTP takes over when the swarm makes no progress for SECS (one blob: 4x SECS; default 30)"), \
	CMD_OPT_STR(T, p2p.seed_time, "seed-time", 0, "SECS", "keep seeding SECS after finishing (default 45)")

struct mirror_swarm;
/* With --p2p: starts the swarm (*sw; NULL without --p2p). Returns an exit code (0 ok). */
int cmd_swarm_open(struct cmd_env *env, const struct cmd_args *a, const struct cmd_p2p_vals *p, struct mirror_swarm **sw);
/* Keeps seeding for --seed-time (unless interrupted), then stops the swarm. Accepts NULL. */
void cmd_swarm_close(struct cmd_env *env, const struct cmd_p2p_vals *p, struct mirror_swarm *sw);
/* Parses a byte rate "N", "NK", "NM", "NG" (powers of 1024); -1 when malformed. */
int64_t cmd_parse_rate(const char *s);

#endif
