/* pool.c - the thread pool of pool.h (one for convert/ and engine/). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif
#include "pool.h"

/* A worker that finished a batch, and the caller waiting for the last one,
 * poll for a short while (about a tenth of a millisecond) before they sleep on the
 * condition variable: the forward pass runs a few hundred batches per token
 * with little in between, and a futex sleep and wake-up per batch cost
 * more than the batch (llama.cpp's threads spin too). */
#define SPIN_ROUNDS 4000

struct util_pool {
	int n;                  /* participants, the caller included */
	pthread_t *th;
	int started;            /* worker threads running (ids 1..started) */
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	uint64_t gen;           /* bumped for each batch */
	atomic_uint_fast64_t agen; /* gen, for the workers' polling */
	int stop;
	atomic_int active;      /* workers inside a batch: it ends at 0 */
	util_task_fn fn;
	void *arg;
	size_t ntasks;
	atomic_size_t next;     /* next task to hand out */
};

struct worker_arg {
	struct util_pool *p;
	int id;
};

static void drain(struct util_pool *p, util_task_fn fn, void *arg, size_t n, int id)
{
	for (;;) {
		size_t t = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
		if (t >= n)
			return;
		fn(arg, t, id);
	}
}

static void *worker(void *v)
{
	struct util_pool *p = ((struct worker_arg *)v)->p;
	int id = ((struct worker_arg *)v)->id;
	uint64_t seen = 0;
	free(v);
	for (;;) {
		for (int i = 0; i < SPIN_ROUNDS && atomic_load_explicit(&p->agen, memory_order_acquire) == seen; i++)
			CPU_RELAX();
		pthread_mutex_lock(&p->mu);
		while (p->gen == seen && !p->stop)
			pthread_cond_wait(&p->go, &p->mu);
		if (p->stop)
			break;
		seen = p->gen;
		util_task_fn fn = p->fn;
		void *arg = p->arg;
		size_t n = p->ntasks;
		pthread_mutex_unlock(&p->mu);
		drain(p, fn, arg, n, id);
		if (atomic_fetch_sub_explicit(&p->active, 1, memory_order_acq_rel) == 1) {
			/* under the lock: the caller checks active under it before it sleeps */
			pthread_mutex_lock(&p->mu);
			pthread_cond_signal(&p->done);
			pthread_mutex_unlock(&p->mu);
		}
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

struct util_pool *util_pool_new(int nthreads)
{
	struct util_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->n = nthreads < 1 ? 1 : nthreads;
	atomic_init(&p->next, 0);
	atomic_init(&p->agen, 0);
	atomic_init(&p->active, 0);
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->go, NULL);
	pthread_cond_init(&p->done, NULL);
	if (p->n > 1 && !(p->th = calloc((size_t)p->n - 1, sizeof(*p->th))))
		goto fail;
	for (int i = 0; i < p->n - 1; i++) {
		struct worker_arg *a = malloc(sizeof(*a));
		if (!a)
			goto fail;
		a->p = p;
		a->id = i + 1;
		if (pthread_create(&p->th[i], NULL, worker, a)) {
			free(a);
			goto fail;
		}
		p->started++;
	}
	return p;
fail:
	util_pool_free(p);
	return NULL;
}

int util_pool_size(const struct util_pool *p)
{
	return p->n;
}

void util_pool_start(struct util_pool *p, util_task_fn fn, void *arg, size_t n)
{
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->arg = arg;
	p->ntasks = n;
	atomic_store_explicit(&p->next, 0, memory_order_relaxed);
	/* every worker passes through every batch once and checks out */
	atomic_store_explicit(&p->active, p->started, memory_order_relaxed);
	p->gen++;
	atomic_store_explicit(&p->agen, p->gen, memory_order_release);
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
}

void util_pool_wait(struct util_pool *p)
{
	pthread_mutex_lock(&p->mu);
	util_task_fn fn = p->fn;
	void *arg = p->arg;
	size_t n = p->ntasks;
	pthread_mutex_unlock(&p->mu);
	drain(p, fn, arg, n, 0);
	for (int i = 0; i < SPIN_ROUNDS && atomic_load_explicit(&p->active, memory_order_acquire) > 0; i++)
		CPU_RELAX();
	if (atomic_load_explicit(&p->active, memory_order_acquire) == 0)
		return;
	pthread_mutex_lock(&p->mu);
	while (atomic_load_explicit(&p->active, memory_order_acquire) > 0)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

void util_pool_run(struct util_pool *p, util_task_fn fn, void *arg, size_t n)
{
	if (p->started == 0 || n <= 1) {
		for (size_t t = 0; t < n; t++)
			fn(arg, t, 0);
		return;
	}
	util_pool_start(p, fn, arg, n);
	util_pool_wait(p);
}

void util_pool_free(struct util_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->started; i++)
		pthread_join(p->th[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->go);
	pthread_cond_destroy(&p->done);
	free(p->th);
	free(p);
}
