/* p2p.c - the --p2p options shared by pull and sync: start the swarm,
 * linger as a seed afterwards. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cmd.h"
#include "../mirror/mirror.h"

/* Machines of a lab started together finish within seconds of each other:
 * 45 s of seeding lets the late ones finish from their peers. */
#define SEED_TIME_DEFAULT 45

int64_t cmd_parse_rate(const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -1;
	switch (*end) {
	case 'k': case 'K': v *= 1024; end++; break;
	case 'm': case 'M': v *= 1024 * 1024; end++; break;
	case 'g': case 'G': v *= 1024.0 * 1024 * 1024; end++; break;
	default: break;
	}
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v > 2e9)
		return -1;
	return (int64_t)v;
}

int cmd_swarm_open(struct cmd_env *env, const struct cmd_args *a, const struct cmd_p2p_vals *p, struct mirror_swarm **sw)
{
	struct mirror_swarm_opts o = {0};
	char listen[64];
	int port, stall, seed;
	enum hm_err err;

	*sw = NULL;
	if (cmd_int_opt(a, &p->port, 6881, 0, 65535, &port) || cmd_int_opt(a, &p->stall, 30, 1, 86400, &stall) ||
	    cmd_int_opt(a, &p->seed_time, SEED_TIME_DEFAULT, 0, 7 * 86400, &seed))
		return 2;
	if (!p->p2p)
		return 0;
	if (p->upload_rate && (o.upload_rate = cmd_parse_rate(p->upload_rate)) < 0) {
		fprintf(stderr, "hubmirror: error: --p2p-upload-rate wants bytes/s like 20M, not '%s'\n", p->upload_rate);
		return 2;
	}
	snprintf(listen, sizeof(listen), "0.0.0.0:%d", port);
	o.listen = listen;
	o.stall = stall;
	err = mirror_swarm_new(&env->ctx, &o, sw);
	if (err)
		return cmd_error(env, err);
	return 0;
}

void cmd_swarm_close(struct cmd_env *env, const struct cmd_p2p_vals *p, struct mirror_swarm *sw)
{
	int seed = SEED_TIME_DEFAULT;
	if (!sw)
		return;
	if (p->seed_time)
		seed = atoi(p->seed_time);
	if (seed > 0) {
		if (!env->quiet && !env->json)
			fprintf(stderr, "hubmirror: seeding for %d s (--seed-time)\n", seed);
		mirror_swarm_linger(&env->ctx, sw, seed);
	}
	mirror_swarm_free(sw);
}
