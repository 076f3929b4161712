/* The kernels' worker pool (pool.c), as kernels.c calls it. */
#ifndef EDGEFLEET_POOL_H
#define EDGEFLEET_POOL_H
#include <stdint.h>

/* Computes part [begin, end) of a call's output rows from its operands `args`. */
typedef void (*pool_task)(const void *args, int64_t begin, int64_t end);

/* task(args, begin, end) over [0, count) split in `threads` parts, the caller doing part 0. */
void pool_run(pool_task task, const void *args, int64_t count, int threads);

#endif
