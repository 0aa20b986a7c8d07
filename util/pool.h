/* pool.h - a fixed pool of worker threads running batches of numbered
 * tasks, handed out by an atomic counter so that one slow task never idles
 * the others; the caller's thread takes part. convert/ (the conversion
 * pipeline) and engine/ (the forward pass) both run on it. */
#ifndef UTIL_POOL_H
#define UTIL_POOL_H

#include <stddef.h>

struct util_pool;
/* Runs task number task; worker is in 0..util_pool_size()-1 (0: the caller),
 * and no two tasks run at once with the same worker. */
typedef void (*util_task_fn)(void *arg, size_t task, int worker);

/* nthreads >= 1 participants: nthreads - 1 worker threads and the caller.
 * NULL when out of memory or a thread cannot start. */
struct util_pool *util_pool_new(int nthreads);
/* The participants (nthreads of util_pool_new). */
int util_pool_size(const struct util_pool *p);
/* Starts tasks 0..n-1 of fn on the workers and returns at once. One batch
 * at a time: the previous one must have been waited for. */
void util_pool_start(struct util_pool *p, util_task_fn fn, void *arg, size_t n);
/* Takes the caller's share of the batch's tasks, then waits until all are
 * done (so no worker still looks at it when the next starts). */
void util_pool_wait(struct util_pool *p);
/* start + wait; with no worker threads, or one task, the caller runs them alone. */
void util_pool_run(struct util_pool *p, util_task_fn fn, void *arg, size_t n);
/* Stops and joins the workers. Accepts NULL. */
void util_pool_free(struct util_pool *p);

#endif
