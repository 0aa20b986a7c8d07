/* pool.c - the matrix-vector products of the forward pass on the thread
 * pool (util/pool.c): rows split in chunks handed out by an atomic counter,
 * so a slow core never holds up the others for long. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "engine-int.h"

/* ---- matrix products ---- */

struct mm_job {
	const struct eng_kernels *k;
	const struct eng_act *a;
	const struct eng_mm *mm;
	size_t first[4]; /* first task of each product; first[n] = total */
	size_t chunk[3];
	int n;
	int packed; /* what xa holds: 0 nothing, 1 the 8-bit rows (pack), 2 the float rows (pack_f) */
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
	if (j->packed == 1)
		j->k->mm->pack(j->a->q + t * j->a->cols, j->a->d + t * (j->a->cols / ENG_QK), j->a->cols, t, j->a->xa);
}

static void pack_f_task(void *arg, size_t t, int worker)
{
	const struct mm_job *j = arg;
	(void)worker;
	j->k->mm->pack_f(j->a->x + t * j->a->stride, j->a->cols, t, j->a->xa);
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
				j->k->mm->prep ? j->a->xt : NULL,
				(j->packed == 1 && eng_type_int8(w->type)) || (j->packed == 2 && !eng_type_int8(w->type)) ? j->a->xa
															: NULL};
	a.r1 = a.r0 + j->chunk[i] < w->rows ? a.r0 + j->chunk[i] : w->rows;
	if (eng_type_int8(w->type))
		j->k->mm->int8(&a);
	else
		j->k->mm->flt(&a);
}

void eng_matmul_run(struct util_pool *p, const struct eng_kernels *k, const struct eng_act *a, const struct eng_mm *mm,
		    int n)
{
	struct mm_job j = {k, a, mm, {0}, {0}, n, 0};
	size_t tasks = 0;
	int int8 = 0, q8 = 0, f16 = 0;
	for (int i = 0; i < n; i++) {
		/* about 8 chunks per participant, a multiple of the kernels' tiles */
		size_t rows = (size_t)mm[i].w->rows, c = rows / ((size_t)util_pool_size(p) * 8) / ENG_MM_CHUNK * ENG_MM_CHUNK;
		if (c < ENG_MM_CHUNK)
			c = ENG_MM_CHUNK;
		j.chunk[i] = c;
		j.first[i] = tasks;
		tasks += (rows + c - 1) / c;
		int8 |= eng_type_int8(mm[i].w->type);
		q8 |= mm[i].w->type == FMT_GGML_Q8_0;
		f16 |= mm[i].w->type == FMT_GGML_F16;
	}
	j.first[n] = tasks;
	/* a batch is packed once for the level's tile kernels (AMX: Q8_0 and
	 * F16 weights): the 8-bit rows when a product has 8-bit weights, else
	 * the float rows */
	if (a->xa && a->n > 1)
		j.packed = int8 ? (k->mm->pack && q8 ? 1 : 0) : (k->mm->pack_f && f16 && a->cols % 32 == 0 ? 2 : 0);
	/* a few rows are quantized here: waking the workers costs more (a
	 * generation step has four products per layer) */
	if (int8 && a->n <= 8)
		for (size_t t = 0; t < a->n; t++)
			quant_task(&j, t, 0);
	else if (int8)
		util_pool_run(p, quant_task, &j, a->n);
	else if (j.packed == 2)
		util_pool_run(p, pack_f_task, &j, a->n);
	util_pool_run(p, mm_task, &j, tasks);
}
