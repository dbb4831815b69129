// Internal: the worker pool every kernel shares.
#ifndef CK_POOL_H
#define CK_POOL_H
typedef void (*ck_task_fn)(void *ctx, int task);
/// Runs fn(ctx, t) for t in [0, tasks) on the pool (the caller works too) and returns when all are done.
/// Concurrent callers are serialised; a task must not call ck_parallel itself.
void ck_parallel(ck_task_fn fn, void *ctx, int tasks);
/// Chooses a task count for `units` items of roughly equal cost, `min_per_task` items at least per task.
int ck_task_count(int units, int min_per_task);
#endif
