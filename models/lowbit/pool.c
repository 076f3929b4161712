/* The kernels' worker threads: spin (yielding) for a short while after each call, then sleep.
 *
 * Every node runs OpenMP with OMP_WAIT_POLICY=PASSIVE (spinning OpenMP workers starve the other
 * processes that share the cores), and waking a sleeping worker costs tens of microseconds a call on
 * a VM: ~120 kernel calls a token paid for it (docs/lowbit.md). These workers keep polling for the
 * next call for EDGEFLEET_KERNEL_SPIN_US microseconds (default 1000; 0 = sleep at once), calling
 * sched_yield between polls so that any other runnable thread gets the core first, and sleep on a
 * condition variable after that: a decoding token finds them awake, an idle node does not pay.
 *
 * One call at a time uses the pool; a concurrent caller (another Python thread) runs its call on its
 * own thread instead of waiting. Work is split into contiguous parts like OpenMP's static schedule,
 * and each output row is computed by one thread, so results do not depend on the split.
 */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef __x86_64__
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() __asm__ __volatile__("" ::: "memory")
#endif

#include "pool.h"

#define MAX_THREADS 64

static pthread_mutex_t call_lock = PTHREAD_MUTEX_INITIALIZER;  /* held by the one call using the pool */
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int workers;        /* started worker threads (under call_lock) */
static pid_t owner;        /* the process that started them: a forked child starts its own */
static int64_t spin_ns = -1;

/* The published call (written before `generation` moves, read after). */
static pool_task task;
static const void *task_args;
static int64_t task_count;
static int task_parts;
static uint64_t generation;  /* atomic: one step per call */
static int pending;          /* atomic: workers that have not answered this call yet */
static int sleepers;         /* atomic: workers asleep or about to be */

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void run_part(pool_task fn, const void *args, int64_t count, int parts, int part) {
    int64_t begin = count * part / parts, end = count * (part + 1) / parts;
    if (begin < end) fn(args, begin, end);
}

struct worker_start { int part; uint64_t seen; };

static void *worker_main(void *arg) {
    struct worker_start start = *(struct worker_start *)arg;
    free(arg);
    int part = start.part;
    uint64_t seen = start.seen;  /* the generation before the call that started it: it answers that call */
    for (;;) {
        int64_t started = now_ns();
        uint64_t current;
        while ((current = __atomic_load_n(&generation, __ATOMIC_ACQUIRE)) == seen) {
            CPU_RELAX();
            sched_yield();
            if (now_ns() - started > __atomic_load_n(&spin_ns, __ATOMIC_RELAXED)) {
                pthread_mutex_lock(&sleep_lock);
                __atomic_add_fetch(&sleepers, 1, __ATOMIC_SEQ_CST);
                while (__atomic_load_n(&generation, __ATOMIC_SEQ_CST) == seen) pthread_cond_wait(&wake, &sleep_lock);
                __atomic_sub_fetch(&sleepers, 1, __ATOMIC_SEQ_CST);
                pthread_mutex_unlock(&sleep_lock);
                started = now_ns();
            }
        }
        seen = current;
        if (part < task_parts) run_part(task, task_args, task_count, task_parts, part);
        __atomic_sub_fetch(&pending, 1, __ATOMIC_RELEASE);  /* every worker answers every call: none lags behind */
    }
    return NULL;
}

/* How long idle workers poll before they sleep, in microseconds (0: sleep at once). Takes effect from the
 * next time each worker waits. */
void pool_set_spin_us(int64_t microseconds) {
    __atomic_store_n(&spin_ns, (microseconds < 0 ? 0 : microseconds) * 1000, __ATOMIC_RELAXED);
}

static void read_spin_setting(void) {
    if (__atomic_load_n(&spin_ns, __ATOMIC_RELAXED) < 0) {
        const char *value = getenv("EDGEFLEET_KERNEL_SPIN_US");
        pool_set_spin_us(value ? atoll(value) : 1000);
    }
}

int64_t pool_spin_us(void) {
    read_spin_setting();
    return __atomic_load_n(&spin_ns, __ATOMIC_RELAXED) / 1000;
}

static int ensure_workers(int wanted) {
    read_spin_setting();
    if (owner != getpid()) {  /* threads do not survive fork: a child starts its own */
        workers = 0;
        owner = getpid();
        sleepers = 0;
        pthread_mutex_init(&sleep_lock, NULL);
        pthread_cond_init(&wake, NULL);
    }
    while (workers < wanted) {
        struct worker_start *start = malloc(sizeof *start);
        if (start == NULL) break;
        start->part = workers + 1;
        start->seen = __atomic_load_n(&generation, __ATOMIC_SEQ_CST);
        pthread_t thread;
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attributes, worker_main, start);
        pthread_attr_destroy(&attributes);
        if (failed) { free(start); break; }
        workers++;
    }
    return workers;
}

void pool_run(pool_task fn, const void *args, int64_t count, int threads) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads <= 1 || count < 2 || pthread_mutex_trylock(&call_lock) != 0) {
        fn(args, 0, count);
        return;
    }
    int started = ensure_workers(threads - 1);
    int parts = 1 + (started < threads - 1 ? started : threads - 1);
    if (parts > count) parts = (int)count;
    task = fn; task_args = args; task_count = count; task_parts = parts;
    __atomic_store_n(&pending, started, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&generation, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&sleepers, __ATOMIC_SEQ_CST) > 0) {  /* seq_cst on both sides: no lost wake-up */
        pthread_mutex_lock(&sleep_lock);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&sleep_lock);
    }
    run_part(fn, args, count, parts, 0);
    while (__atomic_load_n(&pending, __ATOMIC_ACQUIRE) > 0) {
        CPU_RELAX();
        sched_yield();
    }
    pthread_mutex_unlock(&call_lock);
}
