/* Streaming-read bandwidth probe for the LLM benchmark's decode bound.
 *
 * Decoding one token reads every weight matrix once, so the memory read bandwidth caps decode speed:
 * tok/s <= bandwidth / bytes read per token. This measures that bandwidth the way a decode step uses it:
 * THREADS threads each stream through their own slice of one MB-megabyte buffer, summing 64-bit words
 * (the compiler vectorizes the loop, so the arithmetic is far cheaper than the loads).
 *
 *     read_bw [MB=1024] [THREADS=2] [REPS=7] [PAGES=huge|small]
 *
 * PAGES: "huge" asks for transparent huge pages (madvise), as numpy does for large arrays, so TLB misses do not
 * cut the figure: this is the hardware's streaming rate, the ceiling a decoder can approach. "small" forbids
 * them: 4 KiB pages, as a model file mapped from the page cache gets. On this project's VMs, quiet, 2 threads
 * read about 35 GB/s with huge pages and 24 GB/s with small ones.
 *
 * Each thread first writes its slice (so its pages are resident and local), then every rep runs between two
 * barriers and is timed by thread 0 from the first barrier to the second. Prints one JSON line:
 * {"mb": ..., "threads": ..., "pages": ..., "gb_per_s": [one per rep], "median_gb_per_s": ...,
 *  "best_gb_per_s": ..., "checksum": ...}; GB are 1e9 bytes. Built by benchmarks/setup_llm_peers.py with cc -O3 -march=native.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define MAX_THREADS 64
#define MAX_REPS 100
#define HUGE_PAGE (2 * 1024 * 1024)

typedef struct {
    const uint64_t *words;
    size_t n_words;
    int id;
    uint64_t sum;
} Slice;

static pthread_barrier_t barrier;
static int n_reps;
static double rep_seconds[MAX_REPS];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Four independent sums so the adds do not form one dependency chain. */
static uint64_t sum_words(const uint64_t *w, size_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a += w[i];
        b += w[i + 1];
        c += w[i + 2];
        d += w[i + 3];
    }
    for (; i < n; i++) a += w[i];
    return a + b + c + d;
}

static void *reader(void *arg) {
    Slice *s = arg;
    memset((void *)s->words, s->id + 1, s->n_words * sizeof(uint64_t)); /* first touch by its reader */
    for (int r = 0; r < n_reps; r++) {
        pthread_barrier_wait(&barrier);
        double t0 = now();
        s->sum += sum_words(s->words, s->n_words);
        pthread_barrier_wait(&barrier);
        if (s->id == 0) rep_seconds[r] = now() - t0;
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    long mb = argc > 1 ? atol(argv[1]) : 1024;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    n_reps = argc > 3 ? atoi(argv[3]) : 7;
    const char *pages = argc > 4 ? argv[4] : "huge";
    int huge = strcmp(pages, "huge") == 0;
    if (mb < 1 || threads < 1 || threads > MAX_THREADS || n_reps < 1 || n_reps > MAX_REPS ||
        (!huge && strcmp(pages, "small") != 0)) {
        fprintf(stderr, "usage: read_bw [MB>=1] [THREADS 1..%d] [REPS 1..%d] [huge|small]\n", MAX_THREADS,
                MAX_REPS);
        return 2;
    }
    size_t n_words = (size_t)mb * 1000000 / sizeof(uint64_t);
    size_t n_bytes = (n_words * sizeof(uint64_t) + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    uint64_t *buf = NULL;
    if (posix_memalign((void **)&buf, HUGE_PAGE, n_bytes) != 0) {
        fprintf(stderr, "read_bw: cannot allocate %ld MB\n", mb);
        return 1;
    }
    /* Advice only: without THP support the kernel ignores it, and "huge" then measures small pages. */
    madvise(buf, n_bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    pthread_barrier_init(&barrier, NULL, threads);
    Slice slices[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    size_t per = n_words / threads;
    for (int t = 0; t < threads; t++) {
        size_t n = t == threads - 1 ? n_words - per * t : per;
        slices[t] = (Slice){buf + per * t, n, t, 0};
        if (t > 0 && pthread_create(&tids[t], NULL, reader, &slices[t]) != 0) {
            fprintf(stderr, "read_bw: cannot start thread %d\n", t);
            return 1;
        }
    }
    reader(&slices[0]);
    uint64_t checksum = slices[0].sum;
    for (int t = 1; t < threads; t++) {
        pthread_join(tids[t], NULL);
        checksum += slices[t].sum; /* printed, so the reads cannot be optimised away */
    }
    double bytes = (double)n_words * sizeof(uint64_t), rates[MAX_REPS];
    printf("{\"mb\": %ld, \"threads\": %d, \"pages\": \"%s\", \"gb_per_s\": [", mb, threads, pages);
    for (int r = 0; r < n_reps; r++) {
        rates[r] = bytes / rep_seconds[r] / 1e9;
        printf("%s%.3f", r ? ", " : "", rates[r]);
    }
    qsort(rates, n_reps, sizeof(double), cmp_double);
    double median = n_reps % 2 ? rates[n_reps / 2] : (rates[n_reps / 2 - 1] + rates[n_reps / 2]) / 2;
    printf("], \"median_gb_per_s\": %.3f, \"best_gb_per_s\": %.3f, \"checksum\": %llu}\n", median,
           rates[n_reps - 1], (unsigned long long)checksum);
    free(buf);
    return 0;
}
