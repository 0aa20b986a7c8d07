/* pool.c - a persistent pool of worker threads for the forward pass, and the
 * matrix-vector products that run on it (rows split in chunks handed out by
 * an atomic counter, so a slow core never holds up the others for long). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "engine-int.h"

struct eng_pool {
	int n; /* participants, the caller included */
	pthread_t *th;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	uint64_t gen;
	int stop, active;
	eng_task_fn fn;
	void *arg;
	size_t ntasks;
	atomic_size_t next;
};

struct worker_arg {
	struct eng_pool *p;
	int id;
};

static void drain(struct eng_pool *p, eng_task_fn fn, void *arg, size_t n, int id)
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
	struct eng_pool *p = ((struct worker_arg *)v)->p;
	int id = ((struct worker_arg *)v)->id;
	uint64_t seen = 0;
	free(v);
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (p->gen == seen && !p->stop)
			pthread_cond_wait(&p->go, &p->mu);
		if (p->stop)
			break;
		seen = p->gen;
		eng_task_fn fn = p->fn;
		void *arg = p->arg;
		size_t n = p->ntasks;
		pthread_mutex_unlock(&p->mu);
		drain(p, fn, arg, n, id);
		pthread_mutex_lock(&p->mu);
		if (--p->active == 0)
			pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

struct eng_pool *eng_pool_new(int nthreads)
{
	struct eng_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->n = nthreads < 1 ? 1 : nthreads;
	atomic_init(&p->next, 0);
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
	eng_pool_free(p);
	return NULL;
}

int eng_pool_size(const struct eng_pool *p)
{
	return p->n;
}

void eng_pool_run(struct eng_pool *p, eng_task_fn fn, void *arg, size_t n)
{
	if (p->started == 0 || n <= 1) {
		for (size_t t = 0; t < n; t++)
			fn(arg, t, 0);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->arg = arg;
	p->ntasks = n;
	atomic_store_explicit(&p->next, 0, memory_order_relaxed);
	p->active = p->started;
	p->gen++;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	drain(p, fn, arg, n, 0);
	pthread_mutex_lock(&p->mu);
	while (p->active > 0)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

void eng_pool_free(struct eng_pool *p)
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

/* ---- matrix products ---- */

struct mm_job {
	const struct eng_kernels *k;
	const struct eng_act *a;
	const struct eng_mm *mm;
	size_t first[4]; /* first task of each product; first[n] = total */
	size_t chunk[3];
	int n;
};

static void quant_task(void *arg, size_t t, int worker)
{
	const struct mm_job *j = arg;
	(void)worker;
	j->k->mm->quant(j->a->x + t * j->a->stride, j->a->cols, j->a->q + t * j->a->cols,
			j->a->d + t * (j->a->cols / ENG_QK));
	if (j->a->xt && j->k->mm->prep)
		j->k->mm->prep(j->a->q + t * j->a->cols, j->a->d + t * (j->a->cols / ENG_QK), j->a->cols,
			       j->a->xt + t * ENG_XT_BYTES(j->a->cols));
}

static void mm_task(void *arg, size_t task, int worker)
{
	const struct mm_job *j = arg;
	int i = 0;
	while (i + 1 < j->n && task >= j->first[i + 1])
		i++;
	const struct eng_weight *w = j->mm[i].w;
	struct eng_mm_args a = {j->k, w, (task - j->first[i]) * j->chunk[i], 0, j->a->n, j->a->cols, j->a->x,
				j->a->stride, j->a->q, j->a->d, j->mm[i].y, j->mm[i].ystride,
				j->a->scr && j->a->scr_len >= ENG_MM_TR * j->a->cols ? j->a->scr + (size_t)worker * j->a->scr_len : NULL,
				j->k->mm->prep ? j->a->xt : NULL};
	a.r1 = a.r0 + j->chunk[i] < w->rows ? a.r0 + j->chunk[i] : w->rows;
	if (eng_type_int8(w->type))
		j->k->mm->int8(&a);
	else
		j->k->mm->flt(&a);
}

void eng_matmul_run(struct eng_pool *p, const struct eng_kernels *k, const struct eng_act *a, const struct eng_mm *mm,
		    int n)
{
	struct mm_job j = {k, a, mm, {0}, {0}, n};
	size_t tasks = 0;
	int int8 = 0;
	for (int i = 0; i < n; i++) {
		/* about 8 chunks per participant, a multiple of 4 rows (the kernels' tile) */
		size_t rows = (size_t)mm[i].w->rows, c = rows / ((size_t)p->n * 8) / 4 * 4;
		if (c < 4)
			c = 4;
		j.chunk[i] = c;
		j.first[i] = tasks;
		tasks += (rows + c - 1) / c;
		int8 |= eng_type_int8(mm[i].w->type);
	}
	j.first[n] = tasks;
	if (int8)
		eng_pool_run(p, quant_task, &j, a->n);
	eng_pool_run(p, mm_task, &j, tasks);
}
