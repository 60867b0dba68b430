/* threadpool.c: one persistent pool of worker threads, and vt_parallel_for over it.
 *
 * Kernels for decoding are called hundreds of times per token, so handing out a job must cost about a
 * microsecond, not a thread start or a futex round trip. The dispatching thread publishes a job by bumping
 * one atomic word; workers that finished recently are still spinning on that word (with a pause instruction)
 * and start at once. A worker idle for the spin window (vt_set_spin_us, 100 us by default) sleeps on a
 * condition variable, so an idle process burns no CPU (and BLAS, which runs between our kernels, gets the
 * cores back); a spinning worker that finds it was descheduled (another thread wanted the core) sleeps at
 * once. The caller works too, taking chunks from the same atomic
 * counter as the workers, and waits only for chunks, never for a worker to wake up: on a busy or virtual
 * machine a sleeping thread can take hundreds of microseconds to get a core. A worker that arrives after
 * the last chunk was taken finds the job closed and goes back to waiting without touching it.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "vt_internal.h"

/* Spinning longer wastes a core that BLAS or another process could use; shorter makes back-to-back
 * kernels (a decoder's matmuls, with Python between them) pay a wake-up of tens of microseconds. Measured on
 * 2 cores (SmolLM2-135M, Gemma 3 270M; best of 8 alternating runs): 1 and 2 ms windows left decode within
 * noise of 100 us (+-3%) and cost prompt processing 10-20% (the spinning worker holds a core that numpy's
 * attention between the products needs). */
#define DEFAULT_SPIN_NS 100000
#define MAX_SPIN_NS 100000000
/* A gap this long between two looks at the clock of a spinning worker (a few microseconds apart when it
 * runs) means it was descheduled: the machine has more runnable threads than cores, and spinning on takes a
 * core from one of them. */
#define PREEMPTED_NS 200000
/* The dispatching thread waiting on a worker that holds a chunk lets others have its core after this long. */
#define YIELD_NS 10000
/* Chunks per thread: more balance the load when a thread is descheduled or wakes late (it can hold the
 * caller up by at most one chunk), fewer cost fewer atomics. */
#define CHUNKS_PER_THREAD 8
/* Jobs of at most this many grains run on the caller alone: handing out chunks would cost more than it saves. */
#define SERIAL_GRAINS 4
/* Workers that went to sleep are woken only for jobs of at least this many grains (about 100 us of work on
 * one core): the wake-up call costs the caller ~5 us and a sleeping thread takes ~50 us to get a core on a
 * virtual machine, so smaller jobs go to the spinning workers only, or stay on the caller. */
#define WAKE_GRAINS 32
/* The job word keeps the thread count in its low 15 bits and JOB_CLOSED above them. */
#define MAX_THREADS 1024
#define JOB_THREADS 0x7fffu
#define JOB_CLOSED 0x8000u

struct worker {
    struct pool *pool;
    int index; /* 1 .. n_threads - 1; the dispatching thread is 0 */
    pthread_t thread;
};

struct pool {
    int n_threads; /* caller included */
    struct worker *workers;

    /* The job: written by the dispatching thread before it publishes `job`, read by workers after. */
    vt_range_fn fn;
    void *ctx;
    int64_t n, chunk, n_chunks;
    atomic_int_fast64_t next_chunk; /* the next chunk to take */
    atomic_int_fast64_t done_chunks;
    atomic_int inside; /* workers between joining a job and leaving it */

    /* (sequence number << 16) | threads taking part (caller included) | JOB_CLOSED once no chunk is left */
    _Atomic uint64_t job;
    atomic_int stop;

    pthread_mutex_t sleep_mu;
    pthread_cond_t wake;
    atomic_int sleepers;
};

static pthread_mutex_t dispatch_mu = PTHREAD_MUTEX_INITIALIZER; /* one job at a time; guards `pool` */
static struct pool *pool;
static int wanted_threads; /* 0: the CPUs this process may run on */
static int pool_failed;    /* no worker could be started: stay serial until the thread count changes */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static _Atomic int64_t spin_ns = DEFAULT_SPIN_NS; /* how long an idle worker spins before it sleeps */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int default_threads(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int resolved_threads(void) {
    int n = wanted_threads > 0 ? wanted_threads : default_threads();
    return n > MAX_THREADS ? MAX_THREADS : n;
}

static void run_chunks(struct pool *p) {
    for (;;) {
        int64_t c = atomic_fetch_add_explicit(&p->next_chunk, 1, memory_order_relaxed);
        if (c >= p->n_chunks)
            return;
        int64_t begin = c * p->chunk;
        int64_t end = begin + p->chunk < p->n ? begin + p->chunk : p->n;
        p->fn(p->ctx, begin, end);
        atomic_fetch_add_explicit(&p->done_chunks, 1, memory_order_release);
    }
}

/* Wait until the job word differs from `seen`: spin first, then sleep. */
static uint64_t wait_for_job(struct pool *p, uint64_t seen) {
    const int64_t start = now_ns(), window = atomic_load_explicit(&spin_ns, memory_order_relaxed);
    int64_t last = start;
    for (unsigned spins = 1;; spins++) {
        uint64_t job = atomic_load_explicit(&p->job, memory_order_acquire);
        if (job != seen)
            return job;
        cpu_relax();
        if ((spins & 255) == 0) {
            int64_t now = now_ns();
            if (now - start > window || now - last > PREEMPTED_NS)
                break;
            last = now;
        }
    }
    /* The dispatcher stores `job` then reads `sleepers`; we add to `sleepers` then read `job` (all
     * sequentially consistent), so either it sees us and broadcasts under the mutex, or we see its job. */
    pthread_mutex_lock(&p->sleep_mu);
    atomic_fetch_add(&p->sleepers, 1);
    uint64_t job;
    while ((job = atomic_load(&p->job)) == seen)
        pthread_cond_wait(&p->wake, &p->sleep_mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->sleep_mu);
    return job;
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct pool *p = w->pool;
    uint64_t seen = 0; /* workers start before the first job is published */
    for (;;) {
        uint64_t job = seen = wait_for_job(p, seen);
        if (atomic_load(&p->stop)) {
            vt_free_thread_buffers();
            return NULL;
        }
        if ((job & JOB_CLOSED) || w->index >= (int)(job & JOB_THREADS))
            continue;
        /* Join, then check the job is still open: the dispatcher closes it, then waits for `inside` to
         * reach 0 (both sequentially consistent), so it either waits for us or we see it closed. */
        atomic_fetch_add(&p->inside, 1);
        if (atomic_load(&p->job) == job)
            run_chunks(p);
        atomic_fetch_sub_explicit(&p->inside, 1, memory_order_release);
    }
}

static void publish(struct pool *p, uint64_t job, int wake) {
    atomic_store(&p->job, job);
    if (wake && atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->sleep_mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->sleep_mu);
    }
}

static void pool_destroy(struct pool *p) {
    atomic_store(&p->stop, 1);
    publish(p, (atomic_load(&p->job) & ~(uint64_t)0xffff) + (1u << 16), 1);
    for (int i = 0; i < p->n_threads - 1; i++)
        pthread_join(p->workers[i].thread, NULL);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->sleep_mu);
    free(p->workers);
    free(p);
}

/* A forked child has the parent's memory but none of its threads: forget the pool (leaking it, since its
 * threads cannot be joined) so the child builds its own at its first parallel kernel. */
static void atfork_prepare(void) { pthread_mutex_lock(&dispatch_mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&dispatch_mu); }
static void atfork_child(void) {
    pool = NULL;
    pool_failed = 0;
    pthread_mutex_unlock(&dispatch_mu);
}
static void register_atfork(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }

/* Called with dispatch_mu held. Returns NULL when no worker thread could be started. */
static struct pool *pool_create(int n_threads) {
    pthread_once(&atfork_once, register_atfork);
    struct pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->sleep_mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->n_threads = 1;

    /* Workers block every signal so that signals (Ctrl-C for Python) go to the application's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 1; i < n_threads; i++) {
        struct worker *w = &p->workers[i - 1];
        w->pool = p;
        w->index = i;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            break; /* run with the threads we got */
        p->n_threads = i + 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (p->n_threads < 2) {
        pool_destroy(p);
        return NULL;
    }
    return p;
}

/* fn over [0, n) in at most max_chunks chunks, per_thread chunks for each thread taking part; `grains` (the job's
 * work) decides whether it is split at all and whether sleeping workers are woken for it. */
static void run_job(int64_t n, int64_t max_chunks, int per_thread, int64_t grains, vt_range_fn fn, void *ctx) {
    if (grains <= SERIAL_GRAINS || max_chunks < 2 || pthread_mutex_trylock(&dispatch_mu) != 0) {
        fn(ctx, 0, n);
        return;
    }
    if (!pool && !pool_failed && resolved_threads() > 1) {
        pool = pool_create(resolved_threads());
        pool_failed = pool == NULL;
    }
    struct pool *p = pool;
    int wake = grains >= WAKE_GRAINS;
    if (!p || (!wake && atomic_load(&p->sleepers) == p->n_threads - 1)) {
        pthread_mutex_unlock(&dispatch_mu);
        fn(ctx, 0, n);
        return;
    }

    int threads = p->n_threads < max_chunks ? p->n_threads : (int)max_chunks;
    int64_t n_chunks = (int64_t)threads * per_thread;
    if (n_chunks > max_chunks)
        n_chunks = max_chunks;
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunk = n / n_chunks + (n % n_chunks != 0);
    p->n_chunks = n / p->chunk + (n % p->chunk != 0);
    atomic_store_explicit(&p->next_chunk, 0, memory_order_relaxed);
    atomic_store_explicit(&p->done_chunks, 0, memory_order_relaxed);
    uint64_t sequence = (atomic_load_explicit(&p->job, memory_order_relaxed) >> 16) + 1;
    uint64_t job = (sequence << 16) | (uint64_t)threads;
    publish(p, job, wake);

    run_chunks(p);
    int64_t start = 0;
    for (unsigned spins = 1; atomic_load_explicit(&p->done_chunks, memory_order_acquire) < p->n_chunks; spins++) {
        cpu_relax();
        if ((spins & 255) == 0) { /* a worker descheduled in the middle of a chunk: let it have this core */
            if (start == 0)
                start = now_ns();
            else if (now_ns() - start > YIELD_NS)
                sched_yield();
        }
    }
    atomic_store(&p->job, job | JOB_CLOSED);
    while (atomic_load_explicit(&p->inside, memory_order_acquire) > 0)
        cpu_relax(); /* a worker that joined just now sees no chunk left and leaves at once */
    pthread_mutex_unlock(&dispatch_mu);
}

void vt_parallel_for(int64_t n, int64_t grain, vt_range_fn fn, void *ctx) {
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    const int64_t chunks = n / grain + (n % grain != 0);
    run_job(n, chunks, CHUNKS_PER_THREAD, chunks, fn, ctx);
}

void vt_parallel_for_units(int64_t n, int64_t unit_grains, vt_range_fn fn, void *ctx) {
    if (n <= 0)
        return;
    /* one chunk per thread: units sharing set-up (the heads of one KV group) do it once per thread */
    run_job(n, n, 1, unit_grains < 1 ? n : n * unit_grains, fn, ctx);
}

void vt_pool_set_threads(int n) {
    pthread_mutex_lock(&dispatch_mu);
    wanted_threads = n > 0 ? n : 0;
    pool_failed = 0;
    if (pool && pool->n_threads != resolved_threads()) {
        pool_destroy(pool);
        pool = NULL;
    }
    pthread_mutex_unlock(&dispatch_mu);
}

void vt_pool_set_spin_us(int64_t us) {
    int64_t ns = us < 0 ? DEFAULT_SPIN_NS : us > MAX_SPIN_NS / 1000 ? MAX_SPIN_NS : us * 1000;
    atomic_store_explicit(&spin_ns, ns, memory_order_relaxed);
}

int64_t vt_pool_spin_us(void) { return atomic_load_explicit(&spin_ns, memory_order_relaxed) / 1000; }

int vt_pool_threads(void) {
    pthread_mutex_lock(&dispatch_mu);
    int n = pool ? pool->n_threads : resolved_threads();
    pthread_mutex_unlock(&dispatch_mu);
    return n;
}
