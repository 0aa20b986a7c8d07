/* chat.c - `hubmirror run MODEL` without a prompt, on a terminal: a
 * conversation as `ollama run` has it. With the model's chat template
 * (engine/chat.h) each line is the user's turn and the whole conversation is
 * rendered again for the next reply; without one (or with --raw) each line is
 * a prompt of its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cmd.h"
#include "../engine/smoke.h"
#include "../engine/chat.h"

#define CHAT_MAX_TURNS 256 /* messages kept; the oldest go first */
#define CHAT_MAX_STOPS 8

struct chat_stream {
	const struct eng_tok *t;
	int32_t prev;
	int quiet;                    /* --json: nothing streamed */
	int32_t stop[CHAT_MAX_STOPS]; /* end-of-turn tokens: end the reply, not printed */
	int nstop;
};

static int chat_token(void *ud, uint32_t tok)
{
	struct chat_stream *st = ud;
	char piece[512];
	int n;
	for (int i = 0; i < st->nstop; i++)
		if ((int32_t)tok == st->stop[i])
			return 1;
	n = eng_tok_decode(st->t, (int32_t)tok, st->prev, piece, sizeof(piece));
	st->prev = (int32_t)tok;
	if (n > 0 && !st->quiet) {
		fwrite(piece, 1, (size_t)n < sizeof(piece) ? (size_t)n : sizeof(piece) - 1, stdout);
		fflush(stdout);
	}
	return 0;
}

/* The tokens that end an assistant turn in the supported families. */
static void chat_stops(const struct eng_tok *t, struct chat_stream *st)
{
	static const char *const names[] = {"<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>",
					    "<|endoftext|>", "<|end_of_text|>", "</s>"};
	if (eng_tok_eos(t) >= 0)
		st->stop[st->nstop++] = eng_tok_eos(t);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && st->nstop < CHAT_MAX_STOPS; i++) {
		int32_t id = eng_tok_find(t, names[i], strlen(names[i]));
		if (id >= 0 && id != eng_tok_eos(t))
			st->stop[st->nstop++] = id;
	}
}

/* One reply to msgs[0..n) (the last is the user's); its text (malloc'd)
 * into *reply. */
static enum hm_err chat_reply(struct cmd_env *env, const struct eng_chat *c, struct eng_state *s,
			      const struct eng_tok *t, const struct cmd_gen *g, const struct eng_chat_msg *msgs,
			      size_t n, char **reply)
{
	struct chat_stream st = {t, -1, 0, {0}, 0};
	struct eng_run r = {0};
	char *text = NULL;
	size_t len, rl;
	int32_t *ids = NULL;
	enum hm_err err;

	*reply = NULL;
	chat_stops(t, &st);
	if ((err = eng_chat_render(&env->ctx, c, msgs, n, 1, &text, &len)))
		return err;
	/* the template writes BOS itself: encoded without another */
	err = eng_run_prompt(&env->ctx, s, t, text, 0, g->n, g->temp, g->top_p, g->seed, chat_token, &st,
			     &r);
	free(text);
	if (!err && !(ids = malloc((r.nout ? r.nout : 1) * sizeof(*ids))))
		err = hm_fail(&env->ctx, HM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; !err && i < r.nout; i++)
		ids[i] = (int32_t)r.out[i];
	if (!err)
		err = eng_tok_decode_all(t, ids, r.nout, 1, &text, &rl);
	/* the template wants text: bytes a reply cut off mid-character become U+FFFD */
	if (!err && !(*reply = cmd_valid_text(text, rl)))
		err = hm_fail(&env->ctx, HM_ERR_NOMEM, "out of memory");
	free(text);
	free(ids);
	eng_run_release(&r);
	return err;
}

static void chat_forget(struct eng_chat_msg *msgs, size_t *n, size_t k)
{
	for (size_t i = 0; i < k && i < *n; i++)
		free((char *)msgs[i].content);
	memmove(msgs, msgs + k, (*n - k) * sizeof(*msgs));
	*n -= k;
}

int cmd_interactive(struct cmd_env *env, const char *path, struct eng_state *s, const struct eng_tok *t,
		    const struct cmd_gen *g)
{
	struct eng_chat_msg msgs[CHAT_MAX_TURNS];
	struct eng_chat *c = NULL;
	char line[8192];
	size_t nmsg = 0;
	int rc = 0;
	enum hm_err err = HM_OK;

	if (!g->raw) {
		err = eng_chat_open(&env->ctx, path, t, &c);
		if (err && err != HM_ERR_NOT_FOUND)
			fprintf(stderr, "hubmirror: warning: %s; lines go to the model as they are\n", env->ctx.errmsg);
		env->ctx.errmsg[0] = 0;
	}
	fprintf(stderr, "hubmirror: interactive%s: type a prompt and Enter; /bye or Ctrl-D ends%s\n",
		c ? " chat (the model's chat template)" : "", c ? ", /clear forgets the conversation" : "");
	for (;;) {
		struct eng_run r = {0};
		struct chat_stream sm = {t, -1, 0, {0}, 0};
		char *reply = NULL;
		size_t len;
		fputs(">>> ", stderr);
		fflush(stderr);
		if (!fgets(line, sizeof(line), stdin))
			break;
		len = strcspn(line, "\r\n");
		line[len] = 0;
		if (!strcmp(line, "/bye") || !strcmp(line, "/exit"))
			break;
		if (c && !strcmp(line, "/clear")) {
			chat_forget(msgs, &nmsg, nmsg);
			continue;
		}
		if (!len)
			continue;
		if (!c) {
			err = eng_run_prompt(&env->ctx, s, t, line, -1, g->n, g->temp, g->top_p, g->seed, chat_token, &sm, &r);
			eng_run_release(&r);
		} else {
			if (nmsg + 2 > CHAT_MAX_TURNS)
				chat_forget(msgs, &nmsg, 2);
			msgs[nmsg].role = "user";
			if (!(msgs[nmsg].content = cmd_valid_text(line, len))) {
				rc = cmd_error(env, hm_fail(&env->ctx, HM_ERR_NOMEM, "out of memory"));
				break;
			}
			nmsg++;
			/* a conversation longer than the context loses its oldest turns */
			while ((err = chat_reply(env, c, s, t, g, msgs, nmsg, &reply)) == HM_ERR_USAGE && nmsg > 2 &&
			       strstr(env->ctx.errmsg, "exceed the context")) {
				env->ctx.errmsg[0] = 0;
				chat_forget(msgs, &nmsg, 2);
			}
			if (!err) {
				msgs[nmsg].role = "assistant";
				msgs[nmsg++].content = reply;
			}
		}
		printf("\n");
		fflush(stdout);
		if (err == HM_ERR_CANCELLED || hm_cancelled(&env->ctx))
			break;
		if (err) {
			rc = cmd_error(env, err);
			break;
		}
	}
	if (!rc)
		fputc('\n', stderr);
	chat_forget(msgs, &nmsg, nmsg);
	eng_chat_free(c);
	return rc;
}

enum hm_err cmd_chat_once(struct cmd_env *env, const char *path, struct eng_state *s, const struct eng_tok *t,
			  const struct cmd_gen *g, const char *system, const char *user, int quiet, struct eng_run *r)
{
	struct chat_stream st = {t, -1, quiet, {0}, 0};
	struct eng_chat_msg msgs[2];
	struct eng_chat *c = NULL;
	char *text = NULL;
	size_t n = 0, len;
	enum hm_err err;

	memset(r, 0, sizeof(*r));
	if ((err = eng_chat_open(&env->ctx, path, t, &c)))
		return err;
	if (system)
		msgs[n++] = (struct eng_chat_msg){"system", system};
	msgs[n++] = (struct eng_chat_msg){"user", user};
	chat_stops(t, &st);
	if (!(err = eng_chat_render(&env->ctx, c, msgs, n, 1, &text, &len)))
		err = eng_run_prompt(&env->ctx, s, t, text, 0, g->n, g->temp, g->top_p, g->seed, chat_token, &st, r);
	free(text);
	eng_chat_free(c);
	return err;
}
