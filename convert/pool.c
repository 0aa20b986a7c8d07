/* pool.c - a small pthread pool: batches of numbered tasks handed out by
 * an atomic counter, so that one slow task never idles the others. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "convert-int.h"

struct conv_pool {
	pthread_t *threads;
	int n, started;
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	unsigned long gen;      /* bumped for each batch */
	int quit;
	int active;             /* workers inside a batch: a batch ends when 0 */
	conv_task_fn fn;
	void *arg;
	atomic_size_t ntasks;
	atomic_size_t next;     /* next task to hand out */
};

static void run_tasks(struct conv_pool *p, int worker)
{
	for (;;) {
		size_t t = atomic_fetch_add(&p->next, 1);
		if (t >= atomic_load(&p->ntasks))
			break;
		p->fn(p->arg, t, worker);
	}
}

struct worker_arg {
	struct conv_pool *p;
	int id;
};

static void *worker_main(void *v)
{
	struct conv_pool *p = ((struct worker_arg *)v)->p;
	int id = ((struct worker_arg *)v)->id;
	unsigned long seen = 0;
	free(v);
	for (;;) {
		pthread_mutex_lock(&p->mu);
		while (!p->quit && p->gen == seen)
			pthread_cond_wait(&p->work, &p->mu);
		if (p->quit) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		seen = p->gen;
		pthread_mutex_unlock(&p->mu);
		run_tasks(p, id);
		pthread_mutex_lock(&p->mu);
		if (--p->active == 0)
			pthread_cond_broadcast(&p->done);
		pthread_mutex_unlock(&p->mu);
	}
}

struct conv_pool *conv_pool_new(int nthreads)
{
	struct conv_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->n = nthreads < 1 ? 1 : nthreads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	atomic_init(&p->next, 0);
	p->threads = calloc((size_t)p->n, sizeof(*p->threads));
	if (!p->threads) {
		conv_pool_free(p);
		return NULL;
	}
	for (int i = 0; i < p->n; i++) {
		struct worker_arg *a = malloc(sizeof(*a));
		if (a) {
			a->p = p;
			a->id = i;
		}
		if (!a || pthread_create(&p->threads[i], NULL, worker_main, a) != 0) {
			free(a);
			conv_pool_free(p);
			return NULL;
		}
		p->started++;
	}
	return p;
}

int conv_pool_size(const struct conv_pool *p)
{
	return p->n;
}

void conv_pool_start(struct conv_pool *p, conv_task_fn fn, void *arg, size_t n)
{
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->arg = arg;
	atomic_store(&p->ntasks, n);
	atomic_store(&p->next, 0);
	/* every worker passes through every batch once and checks out */
	p->active = p->n;
	p->gen++;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->mu);
}

void conv_pool_wait(struct conv_pool *p)
{
	/* the caller's thread takes a share too: worker id n. Waiting for
	 * every worker to check out means none is still looking at this batch
	 * when the next one starts. */
	run_tasks(p, p->n);
	pthread_mutex_lock(&p->mu);
	while (p->active)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

void conv_pool_free(struct conv_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->quit = 1;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->started; i++)
		pthread_join(p->threads[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->work);
	pthread_cond_destroy(&p->done);
	free(p->threads);
	free(p);
}
