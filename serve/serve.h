/* serve.h - the HF-compatible mirror server over the store (libmicrohttpd). */
#ifndef SERVE_H
#define SERVE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "../util/hm.h"
#include "../fetch/fetch.h"

struct srv_opts {
	const char *store_dir;
	const char *listen;            /* "ADDR:PORT" (default 127.0.0.1:8080; port 0 = any) */
	const struct fetch_client_opts *upstream; /* NULL: no pull-through */
	int offline;                   /* never contact upstream */
	int forward_token;             /* forward a client's bearer token upstream */
	const char *const *tokens;     /* accepted bearer tokens; NULL/0: open */
	size_t ntokens;
	const char *const *allow;      /* repo globs served / pulled through; 0: all */
	size_t nallow;
	FILE *access_log;              /* one line per request; may be NULL */
	int max_connections;           /* default 1024; more get 503 */
	int max_per_client;            /* connections per client address (default 256; <0: no cap); more get 503 */
	int timeout;                   /* idle client timeout, seconds (default 60) */
	int header_timeout;            /* request line + headers must arrive within this (default 10 s) */
	int page_size;                 /* tree page size (default 1000) */
	/* --p2p: seed stored blobs over BitTorrent v2 and run (or feed) the tracker */
	int p2p;
	const char *p2p_listen;        /* peer address (default "0.0.0.0:6881") */
	int64_t p2p_upload_rate;       /* bytes/s to all peers; 0 = no cap */
	double p2p_stall;              /* edge: seconds before a stalled swarm falls back to HTTP */
	int p2p_private;               /* also swarm blobs of a mirror that needs a token */
	int p2p_super_seed;            /* the mirror super-seeds (p2p_opts.super_seed) */
	const char *tracker;           /* external tracker's announce URL; NULL: run opentracker */
	const char *tracker_listen;    /* ADDR:PORT of our opentracker (default: --listen's host, 6969) */
	const char *tracker_whitelist; /* with --tracker: its whitelist file, appended to */
	const char *tracker_pidfile;   /* with --tracker: its pid file, for SIGHUP */
	const char *tracker_user;      /* user opentracker runs as when we are root (default nobody) */
	int no_ui;                     /* no web pages at / and /ui/ */
	int presign_expires;           /* S3 store: seconds a redirect's presigned URL lives (default 300) */
	/* called once listening, with the bound address ("http://127.0.0.1:PORT") */
	void (*on_listening)(void *ud, const char *url);
	void *ud;
};

/* Serves until *ctx->cancel is set (SIGTERM/SIGINT), then stops gracefully:
 * stops accepting, lets running responses finish (bounded by the timeout),
 * flushes the request log. */
enum hm_err srv_run(struct hm_ctx *ctx, const struct srv_opts *o) HM_MUST_CHECK;

#endif
