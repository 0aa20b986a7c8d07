/* torrent.c - serve --p2p: the mirror as the lab's BitTorrent v2 seeder.
 * Answers the torrent of a blob (/api/hubmirror/torrents/<sha256>) and the
 * torrents of a revision (/api/{models,datasets}/<repo>/torrents/<rev>),
 * seeds each blob it hands out from the store in place (super-seeding, the
 * upload cap enforced), and runs the tracker (Debian's opentracker, whitelist
 * mode, as an unprivileged user) or feeds an external one's whitelist.
 * Only blobs a stored revision lists, of allowed repos, and (without
 * --p2p-private) of a mirror that needs no token, enter the swarm. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "serve-int.h"
#include "../mirror/mirror.h"
#include "../p2p/p2p.h"
#include "../store/torrents.h"

#define TRACKER_PORT_DEFAULT 6969

struct srv_p2p {
	struct mirror_swarm *sw;
	pthread_mutex_t mu;          /* making torrents, the whitelist, the seeded set */
	pid_t tracker_pid;           /* our opentracker, or 0 */
	char tracker_dir[256];       /* its directory (whitelist inside), removed at the end */
	char whitelist[4200];        /* the whitelist we append to ("" when none) */
	int tracker_port;            /* our tracker's port (for announce URLs) */
	char tracker_host[256];      /* where our tracker listens */
	char (*listed)[65];          /* info-hashes whitelisted and seeded, sorted */
	size_t nlisted, caplisted;
	int restored;                /* stored torrents seeded again after a restart */
};

/* Splits "ADDR:PORT" ("[v6]:PORT"); host gets "" for none. */
static int split_hostport(const char *hp, char *host, size_t hl, int *port)
{
	const char *colon = strrchr(hp, ':');
	const char *h = hp;
	size_t n;
	if (!colon)
		return -1;
	*port = atoi(colon + 1);
	n = (size_t)(colon - hp);
	if (n && h[0] == '[' && h[n - 1] == ']') {
		h++;
		n -= 2;
	}
	if (n >= hl)
		return -1;
	memcpy(host, h, n);
	host[n] = 0;
	return *port > 0 && *port < 65536 ? 0 : -1;
}

static int wait_listening(const char *host, int port, double secs)
{
	double t0 = util_now();
	while (util_now() - t0 < secs) {
		struct sockaddr_in sa = {0};
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		sa.sin_family = AF_INET;
		sa.sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, !strcmp(host, "0.0.0.0") || !host[0] ? "127.0.0.1" : host, &sa.sin_addr) != 1) {
			close(fd);
			return 0; /* not IPv4: trust it */
		}
		int ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
		if (fd >= 0)
			close(fd);
		if (ok)
			return 0;
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return -1;
}

/* Removes the tracker directories that a serve --p2p killed without its
 * cleanup (kill -9, a crash) left in tmp: only ours (owner, name, a pid file
 * naming a process that is gone; one without a pid file only when empty). */
static void clean_stale_tracker_dirs(const char *tmp)
{
	DIR *d = opendir(tmp);
	struct dirent *e;
	if (!d)
		return;
	while ((e = readdir(d))) {
		char dir[4096], file[4200], *txt = NULL;
		size_t n;
		struct stat sb;
		if (strncmp(e->d_name, "hubmirror-tracker-", 18) || strlen(e->d_name) != 24)
			continue;
		snprintf(dir, sizeof(dir), "%s/%s", tmp, e->d_name);
		if (lstat(dir, &sb) || !S_ISDIR(sb.st_mode) || sb.st_uid != getuid())
			continue;
		snprintf(file, sizeof(file), "%s/pid", dir);
		if (!util_read_file(file, 32, &txt, &n)) {
			long pid = strtol(txt, NULL, 10);
			free(txt);
			if (pid <= 0 || (kill((pid_t)pid, 0) && errno == ESRCH)) {
				unlink(file);
				snprintf(file, sizeof(file), "%s/whitelist", dir);
				unlink(file);
			}
		}
		rmdir(dir); /* fails, as it should, while anything is left in it */
	}
	closedir(d);
}

/* Starts opentracker on addr:port in whitelist mode. As root it runs as
 * user (opentracker refuses root); it dies with us (PDEATHSIG). */
static enum hm_err start_tracker(struct srv *s, struct srv_p2p *p, const char *host, int port)
{
	const char *user = s->o->tracker_user ? s->o->tracker_user : "nobody";
	const char *tmp = getenv("TMPDIR");
	struct passwd *pw = NULL;
	char portstr[16];
	int fd;

	if (getuid() == 0 && !(pw = getpwnam(user)))
		return hm_fail(s->ctx, HM_ERR_USAGE, "no user '%s' to run the tracker as (--tracker-user)", user);
	if (!tmp || !*tmp)
		tmp = "/tmp";
	clean_stale_tracker_dirs(tmp);
	snprintf(p->tracker_dir, sizeof(p->tracker_dir), "%s/hubmirror-tracker-XXXXXX", tmp);
	if (!mkdtemp(p->tracker_dir)) {
		p->tracker_dir[0] = 0;
		return hm_fail(s->ctx, HM_ERR_IO, "cannot create a directory for the tracker: %s", strerror(errno));
	}
	chmod(p->tracker_dir, 0755);
	{
		/* who owns the directory, for clean_stale_tracker_dirs after a kill -9 */
		char pidfile[300];
		FILE *f;
		snprintf(pidfile, sizeof(pidfile), "%s/pid", p->tracker_dir);
		if ((f = fopen(pidfile, "w"))) {
			fprintf(f, "%ld\n", (long)getpid());
			fclose(f);
		}
	}
	snprintf(p->whitelist, sizeof(p->whitelist), "%s/whitelist", p->tracker_dir);
	fd = open(p->whitelist, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return hm_fail(s->ctx, HM_ERR_IO, "cannot create '%s': %s", p->whitelist, strerror(errno));
	close(fd);
	snprintf(portstr, sizeof(portstr), "%d", port);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return hm_fail(s->ctx, HM_ERR_IO, "cannot start the tracker: %s", strerror(errno));
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);
		if (nul >= 0) {
			dup2(nul, 0);
			dup2(nul, 1);
			dup2(nul, 2);
		}
		if (pw && (setgroups(0, NULL) || setgid(pw->pw_gid) || setuid(pw->pw_uid)))
			_exit(126);
		/* after the uid change, which would clear it */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(0);
		const char *argv[] = {"opentracker", "-i", host[0] ? host : "0.0.0.0", "-p", portstr, "-P", portstr,
				      "-w", p->whitelist, NULL};
		execvp("opentracker", (char **)argv);
		_exit(127);
	}
	p->tracker_pid = pid;
	if (wait_listening(host, port, 10)) {
		int status;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			p->tracker_pid = 0;
			if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
				return hm_fail(s->ctx, HM_ERR_USAGE, "cannot run 'opentracker' (apt-get install opentracker)");
		}
		return hm_fail(s->ctx, HM_ERR_IO, "the tracker did not start on %s:%d (port in use?)",
			       host[0] ? host : "0.0.0.0", port);
	}
	return HM_OK;
}

enum hm_err srv_p2p_init(struct srv *s)
{
	struct srv_p2p *p;
	struct mirror_swarm_opts so = {0};
	enum hm_err err;

	if (!s->o->p2p)
		return HM_OK;
	p = calloc(1, sizeof(*p));
	if (!p)
		return hm_fail(s->ctx, HM_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&p->mu, NULL);
	s->p2p = p;
	so.listen = s->o->p2p_listen ? s->o->p2p_listen : "0.0.0.0:6881";
	so.upload_rate = s->o->p2p_upload_rate;
	so.origin = 1;
	so.super_seed = s->o->p2p_super_seed && !s->o->upstream; /* an edge is a lab machine */
	so.stall = s->o->p2p_stall;
	if ((err = mirror_swarm_new(s->ctx, &so, &p->sw)))
		return err;
	s->swarm = p->sw;
	if (s->o->tracker) {
		if (s->o->tracker_whitelist)
			snprintf(p->whitelist, sizeof(p->whitelist), "%s", s->o->tracker_whitelist);
		return HM_OK;
	}
	if (s->o->upstream && !s->o->tracker_listen)
		return HM_OK; /* an edge: torrents (and their tracker) come from the upstream mirror */
	{
		char host[256] = "";
		int port = TRACKER_PORT_DEFAULT, lport;
		if (s->o->tracker_listen) {
			if (split_hostport(s->o->tracker_listen, host, sizeof(host), &port))
				return hm_fail(s->ctx, HM_ERR_USAGE, "--tracker-listen wants ADDR:PORT, not '%s'",
					       s->o->tracker_listen);
		} else if (split_hostport(s->o->listen ? s->o->listen : "127.0.0.1:8080", host, sizeof(host), &lport)) {
			snprintf(host, sizeof(host), "127.0.0.1");
		}
		p->tracker_port = port;
		snprintf(p->tracker_host, sizeof(p->tracker_host), "%s", host);
		return start_tracker(s, p, host, port);
	}
}

void srv_p2p_free(struct srv *s)
{
	struct srv_p2p *p = s->p2p;
	if (!p)
		return;
	mirror_swarm_free(p->sw);
	if (p->tracker_pid > 0) {
		kill(p->tracker_pid, SIGTERM);
		for (int i = 0; i < 40; i++) {
			if (waitpid(p->tracker_pid, NULL, WNOHANG) == p->tracker_pid) {
				p->tracker_pid = 0;
				break;
			}
			struct timespec ts = {0, 50 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		if (p->tracker_pid > 0) {
			kill(p->tracker_pid, SIGKILL);
			waitpid(p->tracker_pid, NULL, 0);
		}
	}
	if (p->tracker_dir[0]) {
		char pidfile[300];
		snprintf(pidfile, sizeof(pidfile), "%s/pid", p->tracker_dir);
		unlink(pidfile);
		unlink(p->whitelist);
		rmdir(p->tracker_dir);
	}
	free(p->listed);
	pthread_mutex_destroy(&p->mu);
	free(p);
	s->p2p = NULL;
	s->swarm = NULL;
}

void srv_p2p_totals(const struct srv *s, uint64_t *up, uint64_t *down, int *peers, size_t *torrents)
{
	*up = *down = 0;
	*peers = 0;
	*torrents = 0;
	if (s->p2p)
		mirror_swarm_totals(s->p2p->sw, up, down, peers, torrents);
}

int srv_p2p_own_tracker(const struct srv *s, char *host, size_t hl)
{
	if (!s->p2p || !s->p2p->tracker_pid)
		return 0;
	snprintf(host, hl, "%s", s->p2p->tracker_host);
	return s->p2p->tracker_port;
}

/* The announce URL lab machines use: --tracker, else our tracker on the
 * host the client reached us by. "" when there is none (an edge). */
static void announce_url(struct srv *s, struct MHD_Connection *c, char *out, size_t len)
{
	out[0] = 0;
	if (s->o->tracker) {
		snprintf(out, len, "%s", s->o->tracker);
		return;
	}
	if (!s->p2p->tracker_port)
		return;
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
	char host[256] = "";
	if (h && strlen(h) < sizeof(host)) {
		int port;
		if (split_hostport(h, host, sizeof(host), &port))
			snprintf(host, sizeof(host), "%s", h[0] == '[' ? "" : h);
	}
	for (const char *q = host; *q; q++)
		if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '.' ||
		      *q == '-' || *q == ':')) {
			host[0] = 0; /* a Host header we would not put in a URL */
			break;
		}
	if (!host[0])
		snprintf(host, sizeof(host), "127.0.0.1");
	snprintf(out, len, strchr(host, ':') ? "http://[%s]:%d/announce" : "http://%s:%d/announce", host,
		 s->p2p->tracker_port);
}

/* One announce of ihash to our tracker (event "" or "stopped"); 1 when it
 * was accepted. */
static int tracker_announce(const struct srv_p2p *p, const char *ihash, const char *event)
{
	struct sockaddr_in sa = {0};
	char req[512], resp[1024], *w = req;
	int fd, ok = 0;
	ssize_t got, n = 0;

	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)p->tracker_port);
	if (inet_pton(AF_INET, !strcmp(p->tracker_host, "0.0.0.0") || !p->tracker_host[0] ? "127.0.0.1" : p->tracker_host,
		      &sa.sin_addr) != 1)
		return 1; /* not IPv4: cannot ask, assume yes */
	w += sprintf(w, "GET /announce?info_hash=");
	for (int i = 0; i < 20; i++)
		w += sprintf(w, "%%%.2s", ihash + 2 * i);
	w += sprintf(w, "&peer_id=hubmirror-whitelist&port=1&left=0&numwant=0%s%s HTTP/1.0\r\n\r\n",
		     *event ? "&event=" : "", event);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 1;
	struct timeval tv = {2, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && write(fd, req, strlen(req)) == (ssize_t)strlen(req)) {
		while (n < (ssize_t)sizeof(resp) - 1 && (got = read(fd, resp + n, sizeof(resp) - 1 - (size_t)n)) > 0)
			n += got;
		resp[n] = 0;
		ok = n > 0 && !strstr(resp, "failure reason");
	}
	close(fd);
	return ok;
}

/* Whether our tracker accepts announces of ihash yet (it reloads its
 * whitelist on SIGHUP in a thread of its own). A plain announce (opentracker
 * answers event=stopped without looking at the whitelist), then a stopped one
 * to take the probe's peer out again. */
static int tracker_accepts(const struct srv_p2p *p, const char *ihash)
{
	if (!tracker_announce(p, ihash, ""))
		return 0;
	tracker_announce(p, ihash, "stopped");
	return 1;
}

/* Lets the tracker accept announces of ihash (its first 40 hex: v2 torrents
 * announce the truncated hash), then seeds the blob. Under p->mu. */
static void list_and_seed(struct srv *s, struct store *st, const char *sha256, const unsigned char *t, size_t tlen,
			  const char *ihash, const char *tracker)
{
	struct srv_p2p *p = s->p2p;
	size_t lo = 0, hi = p->nlisted;
	struct hm_ctx q = {0};
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(p->listed[mid], ihash);
		if (!c)
			return;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (p->whitelist[0]) {
		FILE *f = fopen(p->whitelist, "a");
		if (f) {
			fprintf(f, "%.40s\n", ihash);
			fclose(f);
		}
		pid_t pid = p->tracker_pid;
		if (!pid && s->o->tracker_pidfile) {
			char *txt = NULL;
			size_t n;
			if (!util_read_file(s->o->tracker_pidfile, 64, &txt, &n))
				pid = (pid_t)atoi(txt);
			free(txt);
		}
		if (pid > 0)
			kill(pid, SIGHUP);
		/* announces before the reload would fail, and libtorrent's retry
		 * backs off: wait for our tracker (at most 2 s) */
		for (int i = 0; i < 40 && p->tracker_pid > 0 && !tracker_accepts(p, ihash); i++) {
			struct timespec ts = {0, 50 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
	}
	if (mirror_swarm_seed(&q, p->sw, st, sha256, t, tlen, tracker[0] ? tracker : NULL)) {
		if (s->o->access_log)
			fprintf(s->o->access_log, "hubmirror: cannot seed %.12s: %s\n", sha256, q.errmsg);
		return;
	}
	if (p->nlisted == p->caplisted) {
		size_t nc = p->caplisted ? p->caplisted * 2 : 64;
		char(*nv)[65] = realloc(p->listed, nc * sizeof(*nv));
		if (!nv)
			return;
		p->listed = nv;
		p->caplisted = nc;
	}
	memmove(p->listed + lo + 1, p->listed + lo, (p->nlisted - lo) * sizeof(*p->listed));
	memcpy(p->listed[lo], ihash, 65);
	p->nlisted++;
}

/* Whether blob sha256 may enter the swarm: some allowed stored revision
 * lists it and, without --p2p-private, neither the mirror nor all such
 * repos need a token. 0, or the HTTP status with msg saying why. */
static int swarm_allowed(struct srv *s, struct store *st, const char *sha256, char *msg, size_t mlen)
{
	struct hm_ctx q = {0};
	char **repos = NULL;
	unsigned char *tok = NULL;
	size_t nrepos = 0, allowed = 0, open_ = 0;

	if (store_blob_repos(&q, st, sha256, &repos, &nrepos, &tok)) {
		snprintf(msg, mlen, "%.300s", q.errmsg);
		return 500;
	}
	for (size_t i = 0; i < nrepos; i++) {
		const char *colon = strchr(repos[i], ':');
		int ok = srv_repo_allowed(s, colon ? colon + 1 : repos[i]);
		allowed += ok;
		open_ += ok && !tok[i];
	}
	store_strings_free(repos, nrepos);
	free(tok);
	if (!allowed) {
		snprintf(msg, mlen, "blob %.12s is not listed by this mirror", sha256);
		return 404;
	}
	if (srv_token_guarded(s) && !s->o->p2p_private) {
		snprintf(msg, mlen, "this mirror needs a token: its blobs stay out of the swarm (serve --p2p-private)");
		return 403;
	}
	if (!open_ && !s->o->p2p_private) {
		/* pulled with a token from a gated or private repo: this mirror
		 * may answer without one, but the swarm would answer anyone */
		snprintf(msg, mlen, "blob %.12s belongs to a repo that needed a token upstream: it stays out of the "
			 "swarm (serve --p2p-private)", sha256);
		return 403;
	}
	return 0;
}

/* The torrent of a listed blob, seeded. status/msg say why not (0 = ok). */
static int blob_torrent(struct srv *s, struct MHD_Connection *c, struct store *st, const char *sha256,
			unsigned char **t, size_t *tlen, char ihash[65], char *msg, size_t mlen)
{
	struct hm_ctx q = {0};
	char tracker[600];
	int yes = 0, status = 0;
	uint64_t size = 0;

	*t = NULL;
	if ((status = swarm_allowed(s, st, sha256, msg, mlen)))
		return status;
	{
		/* the size as the index has it: the file must be complete */
		struct hm_ctx q2 = {0};
		char path[4096];
		struct stat sb;
		store_blob_path(st, sha256, path, sizeof(path));
		if (stat(path, &sb) == 0)
			size = (uint64_t)sb.st_size;
		if (!size || store_blob_has(&q2, st, sha256, size, &yes) || !yes) {
			snprintf(msg, mlen, "blob %.12s is not in the store", sha256);
			return 404;
		}
	}
	announce_url(s, c, tracker, sizeof(tracker));
	pthread_mutex_lock(&s->p2p->mu);
	if (mirror_blob_torrent(&q, st, sha256, t, tlen, ihash)) {
		snprintf(msg, mlen, "%.300s", q.errmsg);
		status = 500;
	} else {
		list_and_seed(s, st, sha256, *t, *tlen, ihash, tracker);
		if (!s->p2p->restored) {
			/* after a restart: seed again what was handed out before */
			char(*shas)[65] = NULL;
			size_t n = 0;
			s->p2p->restored = 1;
			if (!store_torrents_listed(&q, st, 0, &shas, &n))
				for (size_t i = 0; i < n; i++) {
					unsigned char *bt = NULL;
					size_t bl = 0;
					char ih[65];
					int found = 0;
					char why[512];
					if (swarm_allowed(s, st, shas[i], why, sizeof(why)))
						continue; /* a policy that changed since */
					if (!store_torrent_get(&q, st, shas[i], 0, &bt, &bl, ih, &found) && found)
						list_and_seed(s, st, shas[i], bt, bl, ih, tracker);
					free(bt);
				}
			free(shas);
		}
	}
	pthread_mutex_unlock(&s->p2p->mu);
	return status;
}

/* The torrent with the announce URL in front ("announce" sorts before
 * "info"); a torrent that has one already (an edge's, from its mirror) is
 * sent as it is. */
static enum MHD_Result send_torrent(struct srv_req *q, struct MHD_Connection *c, const unsigned char *t, size_t tlen,
				    const char *tracker, const char *sha256)
{
	struct util_buf b = UTIL_BUF_INIT;
	struct MHD_Response *resp;
	int bad = 0;
	char cd[128];

	if (tracker[0] && tlen > 1 && t[0] == 'd' && memcmp(t, "d8:announce", 11)) {
		bad |= util_buf_printf(&b, "d8:announce%zu:%s", strlen(tracker), tracker);
		bad |= util_buf_add(&b, t + 1, tlen - 1);
	} else {
		bad |= util_buf_add(&b, t, tlen);
	}
	if (bad) {
		util_buf_release(&b);
		return MHD_NO;
	}
	resp = MHD_create_response_from_buffer(b.len, b.buf, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		util_buf_release(&b);
		return MHD_NO;
	}
	snprintf(cd, sizeof(cd), "attachment; filename=\"%.64s.torrent\"", sha256);
	q->planned = b.len;
	return srv_queue(q, c, 200, resp,
			 srv_header(resp, "Content-Type", "application/x-bittorrent") |
				 srv_header(resp, "Content-Disposition", cd));
}

enum MHD_Result srv_p2p_torrent(struct srv_req *q, struct MHD_Connection *c, const struct srv_route *r)
{
	struct srv *s = q->s;
	struct store *st;
	unsigned char *t = NULL;
	size_t tlen = 0;
	char ihash[65], msg[512], tracker[600];
	int status;
	enum MHD_Result ret;

	q->kind = "api";
	if (!s->p2p)
		return srv_send_error(q, c, 404, NULL, "this mirror does not run BitTorrent (serve --p2p)");
	if (strcmp(q->method, "GET") && strcmp(q->method, "HEAD"))
		return srv_send_error(q, c, 405, NULL, "method not allowed");
	if (!util_is_hex(r->path, 64))
		return srv_send_error(q, c, 400, NULL, "not a SHA-256");
	st = srv_store_take(s);
	if (!st)
		return srv_send_error(q, c, 503, NULL, "cannot open the store");
	status = blob_torrent(s, c, st, r->path, &t, &tlen, ihash, msg, sizeof(msg));
	srv_store_put(s, st);
	if (status) {
		free(t);
		return srv_send_error(q, c, status, status == 404 ? "EntryNotFound" : NULL, "%s", msg);
	}
	announce_url(s, c, tracker, sizeof(tracker));
	ret = send_torrent(q, c, t, tlen, tracker, r->path);
	free(t);
	return ret;
}

enum MHD_Result srv_p2p_rev_torrents(struct srv_req *q, struct MHD_Connection *c, const struct srv_route *r)
{
	struct srv *s = q->s;
	struct srv_rev rv;
	struct store *st = NULL;
	int local = 0;
	json_t *arr = NULL;
	enum hm_err err;

	q->kind = "api";
	if (!s->p2p)
		return srv_send_error(q, c, 404, NULL, "this mirror does not run BitTorrent (serve --p2p)");
	if (strcmp(q->method, "GET") && strcmp(q->method, "HEAD"))
		return srv_send_error(q, c, 405, NULL, "method not allowed");
	err = srv_get_rev(s, q, r->type, r->repo, r->rev, &rv, &local);
	if (err || !local) {
		srv_rev_release(s, &rv);
		return srv_send_error(q, c, 404, "RevisionNotFound", "revision '%s' of '%s' is not stored here", r->rev,
				      r->repo);
	}
	st = srv_store_take(s);
	arr = json_array();
	if (!st || !arr) {
		srv_store_put(s, st);
		srv_rev_release(s, &rv);
		json_decref(arr);
		return srv_send_error(q, c, 503, NULL, "cannot open the store");
	}
	for (size_t i = 0; i < rv.nfiles; i++) {
		const struct srv_file *f = &rv.files[i];
		unsigned char *t = NULL;
		size_t tlen = 0;
		char ihash[65], msg[512], url[128];
		int status;
		if (!f->lfs || !f->sha256[0] || !f->size)
			continue;
		status = blob_torrent(s, c, st, f->sha256, &t, &tlen, ihash, msg, sizeof(msg));
		free(t);
		if (status == 403) {
			srv_store_put(s, st);
			srv_rev_release(s, &rv);
			json_decref(arr);
			return srv_send_error(q, c, 403, NULL, "%s", msg);
		}
		if (status)
			continue;
		snprintf(url, sizeof(url), "/api/hubmirror/torrents/%s", f->sha256);
		json_array_append_new(arr, json_pack("{s:s, s:I, s:s, s:s, s:s}", "path", f->path, "size",
						     (json_int_t)f->size, "sha256", f->sha256, "info_hash", ihash,
						     "torrent", url));
	}
	srv_store_put(s, st);
	json_t *j = json_pack("{s:s, s:o}", "commit", rv.commit, "torrents", arr);
	srv_rev_release(s, &rv);
	return srv_send_json(q, c, 200, j);
}
