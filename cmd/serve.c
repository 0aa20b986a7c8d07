/* serve.c - `hubmirror serve`: the store as a Hugging Face-compatible endpoint. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cmd.h"
#include "../serve/serve.h"

/* What the options of opts[] below set (a->o). */
struct serve_vals {
	const char *listen, *upstream, *token_file, *access_log, *max_connections, *max_connections_per_client, *client_timeout, *header_timeout, *page_size, *p2p_port, *p2p_upload_rate, *p2p_stall, *tracker, *tracker_listen, *tracker_whitelist, *tracker_pidfile, *tracker_user, *presign_expiry;
	struct cmd_list allow;
	int offline, forward_token, p2p, p2p_private, p2p_super_seed, no_ui;
	struct cmd_net_vals net;
};

static const struct cmd_opt opts[] = {
	CMD_OPT_STR(struct serve_vals, listen, "listen", 'l', "ADDR:PORT", "where to listen (default 127.0.0.1:8080; 0.0.0.0:8080 for a lab; port 0 = any)"),
	CMD_OPT_STR(struct serve_vals, upstream, "upstream", 'u', "URL", "pull what the store lacks from this hub (e.g. https://huggingface.co)"),
	CMD_OPT_FLAG(struct serve_vals, offline, "offline", 0, "never contact the upstream (even if --upstream is given)"),
	CMD_OPT_STR(struct serve_vals, token_file, "token-file", 0, "FILE", "require 'Authorization: Bearer T' with T one of the lines of FILE"),
	CMD_OPT_LIST(struct serve_vals, allow, "allow", 'a', "GLOB", "serve and pull through only repos matching GLOB (e.g. 'meta-llama/*')"),
	CMD_OPT_FLAG(struct serve_vals, forward_token, "forward-token", 0, "send a client's bearer token upstream (cached files are then served to all clients)"),
	CMD_OPT_STR(struct serve_vals, access_log, "access-log", 0, "FILE", "append one line per request to FILE ('-' = stderr, the default)"),
	CMD_OPT_STR(struct serve_vals, max_connections, "max-connections", 0, "N", "concurrent connections (default 1024); more are answered 503"),
	CMD_OPT_STR(struct serve_vals, max_connections_per_client, "max-connections-per-client", 0, "N", "concurrent connections from one client address (default 256; 0 = no cap); more are answered 503"),
	CMD_OPT_STR(struct serve_vals, client_timeout, "client-timeout", 0, "SECS", "drop a client idle this long (default 60)"),
	CMD_OPT_STR(struct serve_vals, header_timeout, "header-timeout", 0, "SECS", "drop a client whose request line and headers take longer than this in all (default 10)"),
	CMD_OPT_STR(struct serve_vals, page_size, "page-size", 0, "N", "tree entries per page (default 1000, like the Hub)"),
	CMD_OPT_FLAG(struct serve_vals, p2p, "p2p", 0, "seed stored blobs to the lab over BitTorrent v2 and run its tracker"),
	CMD_OPT_STR(struct serve_vals, p2p_port, "p2p-port", 0, "PORT", "TCP port peers connect to (default 6881)"),
	CMD_OPT_STR(struct serve_vals, p2p_upload_rate, "p2p-upload-rate", 0, "RATE", "cap on bytes/s to all peers, e.g. 40M (default none)"),
	CMD_OPT_STR(struct serve_vals, p2p_stall, "p2p-stall", 0, "SECS", "with --upstream: HTTP takes over a swarm download idle SECS (default 30)"),
	CMD_OPT_FLAG(struct serve_vals, p2p_private, "p2p-private", 0, "also put blobs in the swarm when clients need a token (see README)"),
	CMD_OPT_FLAG(struct serve_vals, p2p_super_seed, "p2p-super-seed", 0, "super-seed: offer each peer pieces no other has (slower here; see README)"),
	CMD_OPT_STR(struct serve_vals, tracker, "tracker", 0, "URL", "announce URL of an external tracker instead of running opentracker"),
	CMD_OPT_STR(struct serve_vals, tracker_listen, "tracker-listen", 0, "ADDR:PORT", "where our opentracker listens (default --listen's address, port 6969)"),
	CMD_OPT_STR(struct serve_vals, tracker_whitelist, "tracker-whitelist", 0, "FILE", "with --tracker: the tracker's whitelist, appended to"),
	CMD_OPT_STR(struct serve_vals, tracker_pidfile, "tracker-pidfile", 0, "FILE", "with --tracker: its pid file (SIGHUP after each append)"),
	CMD_OPT_STR(struct serve_vals, tracker_user, "tracker-user", 0, "USER", "user opentracker runs as when serve runs as root (default nobody)"),
	CMD_OPT_FLAG(struct serve_vals, no_ui, "no-ui", 0, "no web pages (by default / and /ui/ show the mirror in a browser)"),
	CMD_OPT_STR(struct serve_vals, presign_expiry, "presign-expiry", 0, "SECS", "on an s3:// store, LFS files redirect to URLs valid this long (default 300)"),
	CMD_NET_OPTS(struct serve_vals),
	CMD_OPT_END,
};

/* The server's only event: a warning at start-up (a lowered limit). */
static void on_event(void *ud, const struct hm_event *ev)
{
	(void)ud;
	if (ev->kind == HM_EV_INFO && ev->msg)
		fprintf(stderr, "hubmirror: warning: %s\n", ev->msg);
}

static void on_listening(void *ud, const char *url)
{
	(void)ud;
	printf("listening on %s\n", url);
	fflush(stdout);
}

/* Reads the accepted tokens: one per line, blank lines and '#' comments skipped. */
static int read_tokens(const char *path, char **data, const char ***toks, size_t *n)
{
	size_t len;
	*toks = NULL;
	*n = 0;
	if (util_read_file(path, 1 << 20, data, &len))
		return -1;
	size_t cap = 1;
	for (size_t i = 0; i < len; i++)
		cap += (*data)[i] == '\n';
	*toks = calloc(cap, sizeof(**toks));
	if (!*toks)
		return -1;
	for (char *save = NULL, *l = strtok_r(*data, "\r\n", &save); l; l = strtok_r(NULL, "\r\n", &save)) {
		while (*l == ' ' || *l == '\t')
			l++;
		size_t k = strlen(l);
		while (k && (l[k - 1] == ' ' || l[k - 1] == '\t'))
			l[--k] = 0;
		if (*l && *l != '#')
			(*toks)[(*n)++] = l;
	}
	return 0;
}

static int run(struct cmd_env *env, struct cmd_args *a)
{
	const struct serve_vals *opt = a->o;
	struct srv_opts o = {0};
	struct fetch_client_opts up = {0};
	const char *tf = opt->token_file, *al = opt->access_log;
	char *tokdata = NULL, *uptoken = NULL;
	const char **toks = NULL;
	size_t ntoks = 0;
	FILE *log = stderr;
	enum hm_err err;
	int rc = 0, maxc, maxpc, ctimeout, htimeout, page, conns, retries, timeout, meta, presign, p2p_port, p2p_stall;
	char p2p_listen[300];

	if (a->npos)
		return cmd_usage_error(&cmd_serve, "serve takes no arguments");
	if (cmd_int_opt(a, &opt->max_connections, 1024, 1, 100000, &maxc) ||
	    cmd_int_opt(a, &opt->max_connections_per_client, 256, 0, 100000, &maxpc) ||
	    cmd_int_opt(a, &opt->header_timeout, 10, 1, 3600, &htimeout) ||
	    cmd_int_opt(a, &opt->client_timeout, 60, 1, 86400, &ctimeout) || cmd_int_opt(a, &opt->page_size, 1000, 1, 100000, &page) ||
	    cmd_int_opt(a, &opt->net.connections, 8, 1, 64, &conns) || cmd_int_opt(a, &opt->net.retries, 5, 0, 100, &retries) ||
	    cmd_int_opt(a, &opt->net.timeout, 30, 1, 3600, &timeout) || cmd_int_opt(a, &opt->net.metadata_timeout, 10, 1, 3600, &meta) ||
	    cmd_int_opt(a, &opt->presign_expiry, 300, 1, 604800, &presign) ||
	    cmd_int_opt(a, &opt->p2p_port, 6881, 0, 65535, &p2p_port) || cmd_int_opt(a, &opt->p2p_stall, 30, 1, 86400, &p2p_stall))
		return 2;
	if (opt->p2p_upload_rate && (o.p2p_upload_rate = cmd_parse_rate(opt->p2p_upload_rate)) < 0)
		return cmd_usage_error(&cmd_serve, "--p2p-upload-rate wants bytes/s like 40M, not '%s'",
				       opt->p2p_upload_rate);
	if ((opt->tracker_whitelist || opt->tracker_pidfile) && !opt->tracker)
		return cmd_usage_error(&cmd_serve, "--tracker-whitelist and --tracker-pidfile go with --tracker URL");
	snprintf(p2p_listen, sizeof(p2p_listen), "0.0.0.0:%d", p2p_port);
	o.p2p = opt->p2p;
	o.p2p_listen = p2p_listen;
	o.p2p_stall = p2p_stall;
	o.p2p_private = opt->p2p_private;
	o.p2p_super_seed = opt->p2p_super_seed;
	o.tracker = opt->tracker;
	o.tracker_listen = opt->tracker_listen;
	o.tracker_whitelist = opt->tracker_whitelist;
	o.tracker_pidfile = opt->tracker_pidfile;
	o.tracker_user = opt->tracker_user;
	if (tf) {
		if (read_tokens(tf, &tokdata, &toks, &ntoks)) {
			fprintf(stderr, "hubmirror: error: cannot read the token file '%s': %s\n", tf, strerror(errno));
			free(tokdata);
			free(toks);
			return 1;
		}
		if (!ntoks) {
			fprintf(stderr, "hubmirror: error: the token file '%s' has no tokens\n", tf);
			free(tokdata);
			free(toks);
			return 1;
		}
	}
	if (al && strcmp(al, "-")) {
		log = fopen(al, "a");
		if (!log) {
			fprintf(stderr, "hubmirror: error: cannot open '%s': %s\n", al, strerror(errno));
			free(tokdata);
			free(toks);
			return 1;
		}
	}
	if (opt->upstream) {
		/* the server's own credentials go upstream: --token, HF_TOKEN ... */
		struct fetch_client *probe = NULL;
		env->endpoint = opt->upstream;
		if ((err = cmd_client(env, a, &opt->net, &probe))) {
			rc = cmd_error(env, err);
			goto out;
		}
		fetch_client_free(probe);
		if (cmd_net_opts(a, &opt->net, &up)) {
			rc = 2;
			goto out;
		}
		up.endpoint = opt->upstream;
		up.endpoint_from = "--upstream";
		uptoken = cmd_token(env);
		up.token = uptoken;
		o.upstream = &up;
	}
	o.store_dir = env->store_dir;
	o.listen = opt->listen;
	o.offline = opt->offline;
	o.forward_token = opt->forward_token;
	o.tokens = toks;
	o.ntokens = ntoks;
	o.nallow = (size_t)opt->allow.n;
	o.allow = opt->allow.v;
	o.access_log = env->quiet ? NULL : log;
	o.max_connections = maxc;
	o.max_per_client = maxpc ? maxpc : -1;
	o.header_timeout = htimeout;
	o.timeout = ctimeout;
	o.page_size = page;
	o.no_ui = opt->no_ui;
	o.presign_expires = presign;
	o.on_listening = on_listening;
	env->ctx.on_event = on_event; /* no progress bar in a server, warnings only */
	err = srv_run(&env->ctx, &o);
	if (err)
		rc = cmd_error(env, err);
out:
	if (log && log != stderr)
		fclose(log);
	free(tokdata);
	free(toks);
	if (uptoken) {
		memset(uptoken, 0, strlen(uptoken));
		free(uptoken);
	}
	return rc;
}

const struct cmd cmd_serve = {
	"serve", "[--listen ADDR:PORT] [--upstream URL] [--offline] [--token-file FILE] [--allow GLOB]...",
	"Serve the store as a Hugging Face-compatible endpoint (HF_ENDPOINT=http://host:port).",
	"Clients keep their usual tools: huggingface_hub, transformers, hf download,\n"
	"@huggingface/hub, hubmirror pull --endpoint. Files are served from the store with\n"
	"sendfile and byte ranges; the API (repo info, revision, tree, paths-info, refs) is\n"
	"answered from the index. With --upstream, what the store lacks is pulled through:\n"
	"fetched once (verified, into the store) however many clients ask, and streamed to\n"
	"them as it arrives. Every request is recorded for 'hubmirror stats'; GET /metrics\n"
	"is Prometheus text. A browser at http://host:port/ shows the mirror: repos, files,\n"
	"commands to use them, statistics and activity (--token-file protects the pages too:\n"
	"a login form or the bearer token; --no-ui turns them off). Prints 'listening on\n"
	"URL' once ready; SIGTERM/SIGINT stop it gracefully.\n"
	"On an s3:// store (--store s3://BUCKET[/PREFIX], AWS_* variables) the node is\n"
	"stateless: LFS files are answered with 302 to a presigned URL of the blob\n"
	"(--presign-expiry), carrying X-Repo-Commit, X-Linked-Etag, X-Linked-Size and ETag;\n"
	"HEAD is answered by the node; small files are streamed through. Any number of\n"
	"nodes on one bucket give the same answers.\n"
	"With --p2p the mirror is the lab's BitTorrent v2 seeder: GET\n"
	"/api/hubmirror/torrents/SHA256 answers a blob's torrent (one v2 torrent per blob,\n"
	"at least 512 pieces of 256 KiB-4 MiB, made once and kept in the index) and\n"
	"/api/models/REPO/torrents/REV a revision's list; each blob handed out is seeded\n"
	"from the store in place, to two peers at a time (anti-leech choking, or\n"
	"super-seeding with --p2p-super-seed; --p2p-upload-rate enforced). It runs\n"
	"opentracker (whitelist mode, as --tracker-user when root) on --tracker-listen,\n"
	"or announces to --tracker.\n"
	"Only blobs of stored, allowed repos enter the swarm; with --token-file or an\n"
	"upstream token, none unless --p2p-private. With --upstream and --p2p (a lab\n"
	"machine's edge), pulled-through blobs come from the swarm and are seeded.",

	opts, sizeof(struct serve_vals), run,
};
