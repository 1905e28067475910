/* Viterbi and k-best Viterbi decoding for the CPU, one fused pass per sentence: the max-plus step, its
 * arg-max (or top k) and the backtrace run in registers and a small per-thread scratch area, where the
 * eager PyTorch version pays a kernel launch and a pass over memory for every add, max and gather of
 * every step.
 *
 * Built and loaded by native.py (plain C, no Python or torch headers; called through ctypes, which
 * releases the GIL). Results equal viterbi.py's: the same float32 sums in the same order, ties going to
 * the lowest (flat) index.
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
    int64_t T, K, k;       /* k: paths per sentence (k-best only) */
    int64_t *paths;        /* (B, T) out: tags, 0 past each length | k-best: (B, k, T), last tag repeated */
    float *scores;         /* (B,) out: best path scores | k-best: (B, k), best first, -inf: no such path */
    int64_t first, last;   /* this worker's sentences [first, last) */
    int failed;            /* scratch allocation failed */
} Job;

static int64_t length(const Job *job, int64_t b) {
    int64_t n = 0;
    for (int64_t t = 0; t < job->T; ++t) n += job->mask[b * job->T + t] != 0;
    return n < 1 ? 1 : n; /* the CRF rejects empty sentences before this; never read out of bounds */
}

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
        const int64_t n = length(job, b);
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

/* Insert candidate (c, from) into the descending top-k list (val, idx), strides `stride` apart; strict >
 * keeps the earlier candidate on ties. The displaced entries move one rank down. */
static inline void insert(float *val, int32_t *idx, int64_t k, int64_t stride, float c, int32_t from) {
    for (int64_t r = 0; r < k; ++r) {
        const float v = val[r * stride];
        if (c > v) {
            const int32_t i = idx[r * stride];
            val[r * stride] = c; idx[r * stride] = from;
            c = v; from = i;
        }
    }
}

/* k-best: the state holds, per tag, the k best prefix scores (rank-major, flat index rank * K + tag,
 * as kbest() in viterbi.py). Candidates are visited in flat order, so ties keep the lower index, and a
 * whole row of candidates is skipped when none beats the worst kept rank (one vectorised compare). */
static void *kbest_range(void *arg) {
    Job *job = (Job *)arg;
    const int64_t T = job->T, K = job->K, k = job->k, kK = job->k * job->K;
    float *restrict score = malloc(sizeof(float) * kK);
    float *restrict next = malloc(sizeof(float) * kK);
    int32_t *restrict from = malloc(sizeof(int32_t) * kK);
    int32_t *restrict back = malloc(sizeof(int32_t) * kK * (T > 1 ? T - 1 : 1)); /* (T-1, k*K) */
    float *restrict final = malloc(sizeof(float) * k);
    int32_t *restrict last = malloc(sizeof(int32_t) * k);
    if (!score || !next || !from || !back || !final || !last) {
        job->failed = 1;
        free(score); free(next); free(from); free(back); free(final); free(last);
        return NULL;
    }
    for (int64_t b = job->first; b < job->last; ++b) {
        const float *em = job->em + b * T * K;
        const int64_t n = length(job, b);
        for (int64_t f = 0; f < kK; ++f) score[f] = f < K ? job->start[f] + em[f] : -INFINITY;
        for (int64_t t = 1; t < n; ++t) {
            for (int64_t f = 0; f < kK; ++f) { next[f] = -INFINITY; from[f] = -1; }
            const float *worst = next + (k - 1) * K;
            for (int64_t f = 0; f < kK; ++f) {
                const float s = score[f];
                if (s == -INFINITY) continue; /* a missing prefix (fewer than k so far) */
                const float *restrict row = job->trans + (f % K) * K;
                int any = 0;
                for (int64_t j = 0; j < K; ++j) any |= s + row[j] > worst[j];
                if (!any) continue;
                for (int64_t j = 0; j < K; ++j) {
                    const float c = s + row[j];
                    if (c > worst[j]) insert(next + j, from + j, k, K, c, (int32_t)f);
                }
            }
            const float *e = em + t * K;
            int32_t *bp = back + (t - 1) * kK;
            for (int64_t f = 0; f < kK; ++f) {
                score[f] = next[f] + e[f % K];
                bp[f] = from[f];
            }
        }
        for (int64_t r = 0; r < k; ++r) { final[r] = -INFINITY; last[r] = -1; }
        for (int64_t f = 0; f < kK; ++f) {
            const float c = score[f] + job->end[f % K];
            if (c > final[k - 1]) insert(final, last, k, 1, c, (int32_t)f);
        }
        for (int64_t r = 0; r < k; ++r) {
            int64_t *path = job->paths + (b * k + r) * T;
            job->scores[b * k + r] = final[r];
            int32_t flat = last[r];
            if (flat < 0) { /* no such path: native.py marks it missing */
                for (int64_t t = 0; t < T; ++t) path[t] = 0;
                continue;
            }
            for (int64_t t = n - 1;; --t) {
                path[t] = flat % K;
                if (t == 0) break;
                flat = back[(t - 1) * kK + flat];
            }
            for (int64_t t = n; t < T; ++t) path[t] = path[n - 1];
        }
    }
    free(score); free(next); free(from); free(back); free(final); free(last);
    return NULL;
}

/* Run `work` over B sentences on up to `threads` threads (contiguous slices of the batch). Returns 0 on
 * success, -1 when scratch memory could not be had. The lengths are counted by the workers rather than
 * by a torch op beforehand: a parallel torch op leaves its OpenMP workers spinning for a while, and on a
 * machine with few cores they would take the CPU from these threads (measured: 2x slower at B=1024). */
static int run(void *(*work)(void *), Job job, int64_t B, int64_t threads) {
    if (threads < 1) threads = 1;
    if (threads > B) threads = B;
    if (threads > 64) threads = 64;
    Job jobs[64];
    pthread_t ids[64];
    int started[64] = {0};
    for (int64_t w = 0; w < threads; ++w) {
        jobs[w] = job;
        jobs[w].first = B * w / threads;
        jobs[w].last = B * (w + 1) / threads;
    }
    for (int64_t w = 1; w < threads; ++w)
        started[w] = pthread_create(&ids[w], NULL, work, &jobs[w]) == 0;
    work(&jobs[0]);
    int status = jobs[0].failed ? -1 : 0;
    for (int64_t w = 1; w < threads; ++w) {
        if (started[w]) pthread_join(ids[w], NULL);
        else work(&jobs[w]); /* no thread to be had: do its share here */
        if (jobs[w].failed) status = -1;
    }
    return status;
}

int ner_viterbi_f32(const float *em, const uint8_t *mask, const float *start, const float *end,
                    const float *trans, int64_t B, int64_t T, int64_t K, int64_t *paths, float *scores,
                    int64_t threads) {
    Job job = {em, mask, start, end, trans, T, K, 1, paths, scores, 0, 0, 0};
    return run(decode_range, job, B, threads);
}

int ner_kbest_f32(const float *em, const uint8_t *mask, const float *start, const float *end,
                  const float *trans, int64_t B, int64_t T, int64_t K, int64_t k, int64_t *paths,
                  float *scores, int64_t threads) {
    Job job = {em, mask, start, end, trans, T, K, k, paths, scores, 0, 0, 0};
    return run(kbest_range, job, B, threads);
}
