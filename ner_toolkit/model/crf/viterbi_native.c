/* Viterbi decoding for the CPU, one fused pass per sentence: the max-plus step, its arg-max and the
 * backtrace run in registers and a small per-thread scratch area, where the eager PyTorch version pays
 * a kernel launch and a pass over memory for every add, max and gather of every step.
 *
 * Built and loaded by native.py (plain C, no Python or torch headers; called through ctypes, which
 * releases the GIL). Results equal viterbi.py's: the same float32 sums in the same order, ties going to
 * the lowest tag index.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    const float *em;       /* (B, T, K) emissions, contiguous */
    const uint8_t *mask;   /* (B, T) length mask (bool), its count per row is the sentence length */
    const float *start;    /* (K,) */
    const float *end;      /* (K,) */
    const float *trans;    /* (K, K) [from, to] */
    int64_t T, K;
    int64_t *paths;        /* (B, T) out: tags, 0 past each length */
    float *scores;         /* (B,) out: best path scores */
    int64_t first, last;   /* this worker's sentences [first, last) */
    int failed;            /* scratch allocation failed */
} Job;

static void *decode_range(void *arg) {
    Job *job = (Job *)arg;
    const int64_t T = job->T, K = job->K;
    float *restrict alpha = malloc(sizeof(float) * K);
    float *restrict next = malloc(sizeof(float) * K);
    int32_t *restrict back = malloc(sizeof(int32_t) * K * (T > 1 ? T - 1 : 1)); /* (T-1, K) backpointers */
    if (!alpha || !next || !back) {
        job->failed = 1;
        free(alpha); free(next); free(back);
        return NULL;
    }
    for (int64_t b = job->first; b < job->last; ++b) {
        const float *em = job->em + b * T * K;
        int64_t n = 0;
        for (int64_t t = 0; t < T; ++t) n += job->mask[b * T + t] != 0;
        if (n < 1) n = 1; /* the CRF rejects empty sentences before this; never read out of bounds */
        for (int64_t j = 0; j < K; ++j) alpha[j] = job->start[j] + em[j];
        for (int64_t t = 1; t < n; ++t) {
            int32_t *restrict bp = back + (t - 1) * K;
            /* Source tags outermost, so that the inner loop runs along a contiguous row of transitions
             * and vectorises (compare, two blends); strict > keeps the lowest index on ties. */
            const float a0 = alpha[0];
            for (int64_t j = 0; j < K; ++j) { next[j] = a0 + job->trans[j]; bp[j] = 0; }
            for (int64_t i = 1; i < K; ++i) {
                const float ai = alpha[i];
                const float *restrict row = job->trans + i * K;
                for (int64_t j = 0; j < K; ++j) {
                    const float c = ai + row[j];
                    const int better = c > next[j];
                    next[j] = better ? c : next[j];
                    bp[j] = better ? (int32_t)i : bp[j];
                }
            }
            const float *e = em + t * K;
            for (int64_t j = 0; j < K; ++j) alpha[j] = next[j] + e[j];
        }
        int64_t tag = 0;
        float best = alpha[0] + job->end[0];
        for (int64_t j = 1; j < K; ++j) {
            const float s = alpha[j] + job->end[j];
            if (s > best) { best = s; tag = j; }
        }
        int64_t *path = job->paths + b * T;
        for (int64_t t = n; t < T; ++t) path[t] = 0;
        path[n - 1] = tag;
        for (int64_t t = n - 1; t > 0; --t) {
            tag = back[(t - 1) * K + tag];
            path[t - 1] = tag;
        }
        job->scores[b] = best;
    }
    free(alpha); free(next); free(back);
    return NULL;
}

/* Decode B sentences on up to `threads` threads (contiguous slices of the batch). Returns 0 on
 * success, -1 when scratch memory could not be had. The lengths are counted here rather than by a torch
 * op beforehand: a parallel torch op leaves its OpenMP workers spinning for a while, and on a machine
 * with few cores they would take the CPU from these threads (measured: 2x slower at B=1024). */
int ner_viterbi_f32(const float *em, const uint8_t *mask, const float *start, const float *end,
                    const float *trans, int64_t B, int64_t T, int64_t K, int64_t *paths, float *scores,
                    int64_t threads) {
    if (threads < 1) threads = 1;
    if (threads > B) threads = B;
    if (threads > 64) threads = 64;
    Job jobs[64];
    pthread_t ids[64];
    int started[64] = {0};
    for (int64_t w = 0; w < threads; ++w) {
        Job job = {em, mask, start, end, trans, T, K, paths, scores, B * w / threads, B * (w + 1) / threads, 0};
        jobs[w] = job;
    }
    for (int64_t w = 1; w < threads; ++w)
        started[w] = pthread_create(&ids[w], NULL, decode_range, &jobs[w]) == 0;
    decode_range(&jobs[0]);
    int status = jobs[0].failed ? -1 : 0;
    for (int64_t w = 1; w < threads; ++w) {
        if (started[w]) pthread_join(ids[w], NULL);
        else decode_range(&jobs[w]); /* no thread to be had: do its share here */
        if (jobs[w].failed) status = -1;
    }
    return status;
}
