/* Weight-streaming matrix kernels for batch-1..8 decoding: y (M, N) = x (M, K) @ W^T.
 *
 * float32 weights (f32_linear): MKL's sgemv streams ~11 GB/s here where the memory gives ~30, so
 * the fp32 variant gets its own kernel (docs/lowbit.md, "A float32 kernel").
 *
 * Weights are stored in blocks of 32 along K, each with float16 parameters:
 *   q4: w = d * q + m, q in 0..15, two per byte (byte j of a block holds q[j] | q[j + 16] << 4)
 *   q8: w = d * q,     q in -127..127 (int8)
 * Activations stay float32. Each weight block is dequantized once into registers and used for
 * every row of x, so the weights are read once per call whatever M is. Rows of W are split over
 * the worker pool of pool.c (dequantization, for prompts, over OpenMP threads). Built with pool.c by
 * models/lowbit/native.py (gcc -O3 -march=native -fopenmp -ffp-contract=off -pthread).
 */
#include <stdint.h>
#include <string.h>
#include "pool.h"
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define BLOCK 32
#define MAX_ROWS 8

static inline float half_to_float(uint16_t h) {
#ifdef __F16C__
    return _cvtsh_ss(h);
#else
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff, bits;
    if (exponent == 0) {
        if (mantissa == 0) { bits = sign; }
        else { exponent = 127 - 15 + 1; while (!(mantissa & 0x400)) { mantissa <<= 1; exponent--; }
               bits = sign | (exponent << 23) | ((mantissa & 0x3ff) << 13); }
    } else if (exponent == 31) { bits = sign | 0x7f800000 | (mantissa << 13); }
    else { bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13); }
    float out; memcpy(&out, &bits, 4); return out;
#endif
}

/* float16 bits -> float32 for the block parameters of one row (vectorised; read back as broadcasts). */
static inline void halves_to_floats(const uint16_t *h, float *out, int64_t count) {
    int64_t i = 0;
#ifdef __AVX512F__
    for (; i + 16 <= count; i += 16)
        _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i))));
#endif
    for (; i < count; i++) out[i] = half_to_float(h[i]);
}

#ifdef __AVX512F__
/* The 32 weights of a q4 block, exactly d * q + m: a 16-entry table of the block's levels
 * (multiply, then add: no fused rounding) looked up with vpermps, which reads only the low 4 bits
 * of each index, so the low nibbles need no mask. Cheaper than converting q to float per weight. */
static inline void q4_block(const uint8_t *qb, float scale, float minimum, __m512 *w_lo, __m512 *w_hi) {
    const __m512 levels = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512 table = _mm512_add_ps(_mm512_mul_ps(levels, _mm512_set1_ps(scale)), _mm512_set1_ps(minimum));
    __m512i packed = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qb));
    *w_lo = _mm512_permutexvar_ps(packed, table);
    *w_hi = _mm512_permutexvar_ps(_mm512_srli_epi32(packed, 4), table);
}
/* q (32 int8) . x (32 floats) as 16 partial sums, before the block's scale. */
static inline __m512 q8_dot(const int8_t *qb, const float *xb) {
    __m512 w_lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)qb)));
    __m512 w_hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(qb + 16))));
    return _mm512_fmadd_ps(w_hi, _mm512_loadu_ps(xb + 16), _mm512_mul_ps(w_lo, _mm512_loadu_ps(xb)));
}
/* Rows 2..8 of x against one weight row: separate sums for the low and high halves of a block. */
static inline __attribute__((always_inline)) void q4_rows(const float *x, const int rows, int64_t k, const uint8_t *q,
                                                          const float *scales, const float *minimums, float *y,
                                                          int64_t n, int64_t out) {
    __m512 lo[MAX_ROWS], hi[MAX_ROWS], w_lo, w_hi;
    for (int r = 0; r < rows; r++) lo[r] = hi[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < k / BLOCK; b++) {
        q4_block(q + b * 16, scales[b], minimums[b], &w_lo, &w_hi);
        for (int r = 0; r < rows; r++) {
            lo[r] = _mm512_fmadd_ps(w_lo, _mm512_loadu_ps(x + r * k + b * BLOCK), lo[r]);
            hi[r] = _mm512_fmadd_ps(w_hi, _mm512_loadu_ps(x + r * k + b * BLOCK + 16), hi[r]);
        }
    }
    for (int r = 0; r < rows; r++) y[r * out + n] = _mm512_reduce_add_ps(_mm512_add_ps(lo[r], hi[r]));
}

static inline __attribute__((always_inline)) void q8_rows(const float *x, const int rows, int64_t k, const int8_t *q,
                                                          const float *scales, float *y, int64_t n, int64_t out) {
    __m512 lo[MAX_ROWS], hi[MAX_ROWS];
    for (int r = 0; r < rows; r++) lo[r] = hi[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < k / BLOCK; b++) {
        __m512 scale = _mm512_set1_ps(scales[b]);
        __m512 w_lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + b * BLOCK)))), scale);
        __m512 w_hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + b * BLOCK + 16)))), scale);
        for (int r = 0; r < rows; r++) {
            lo[r] = _mm512_fmadd_ps(w_lo, _mm512_loadu_ps(x + r * k + b * BLOCK), lo[r]);
            hi[r] = _mm512_fmadd_ps(w_hi, _mm512_loadu_ps(x + r * k + b * BLOCK + 16), hi[r]);
        }
    }
    for (int r = 0; r < rows; r++) y[r * out + n] = _mm512_reduce_add_ps(_mm512_add_ps(lo[r], hi[r]));
}
#endif

/* One output row n for up to MAX_ROWS rows of x. */
static void q4_row(const float *x, int64_t rows, int64_t k, const uint8_t *q, const uint16_t *d,
                   const uint16_t *m, float *y, int64_t n, int64_t out) {
    const int64_t blocks = k / BLOCK;
    float scales[blocks], minimums[blocks];
    halves_to_floats(d, scales, blocks);
    halves_to_floats(m, minimums, blocks);
#ifdef __AVX512F__
    if (rows == 1) {  /* four named sums (registers), two blocks a step: one chain would bound the speed */
        __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps(), sum2 = _mm512_setzero_ps(),
               sum3 = _mm512_setzero_ps(), w_lo, w_hi;
        int64_t b = 0;
        for (; b + 2 <= blocks; b += 2) {
            q4_block(q + b * 16, scales[b], minimums[b], &w_lo, &w_hi);
            sum0 = _mm512_fmadd_ps(w_lo, _mm512_loadu_ps(x + b * BLOCK), sum0);
            sum1 = _mm512_fmadd_ps(w_hi, _mm512_loadu_ps(x + b * BLOCK + 16), sum1);
            q4_block(q + b * 16 + 16, scales[b + 1], minimums[b + 1], &w_lo, &w_hi);
            sum2 = _mm512_fmadd_ps(w_lo, _mm512_loadu_ps(x + b * BLOCK + 32), sum2);
            sum3 = _mm512_fmadd_ps(w_hi, _mm512_loadu_ps(x + b * BLOCK + 48), sum3);
        }
        if (b < blocks) {
            q4_block(q + b * 16, scales[b], minimums[b], &w_lo, &w_hi);
            sum0 = _mm512_fmadd_ps(w_lo, _mm512_loadu_ps(x + b * BLOCK), sum0);
            sum1 = _mm512_fmadd_ps(w_hi, _mm512_loadu_ps(x + b * BLOCK + 16), sum1);
        }
        y[n] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(sum0, sum1), _mm512_add_ps(sum2, sum3)));
        return;
    }
    switch (rows) {  /* a constant row count lets the compiler keep every sum in a register */
        case 2: q4_rows(x, 2, k, q, scales, minimums, y, n, out); break;
        case 3: q4_rows(x, 3, k, q, scales, minimums, y, n, out); break;
        case 4: q4_rows(x, 4, k, q, scales, minimums, y, n, out); break;
        case 5: q4_rows(x, 5, k, q, scales, minimums, y, n, out); break;
        case 6: q4_rows(x, 6, k, q, scales, minimums, y, n, out); break;
        case 7: q4_rows(x, 7, k, q, scales, minimums, y, n, out); break;
        default: q4_rows(x, 8, k, q, scales, minimums, y, n, out); break;
    }
#else
    float acc[MAX_ROWS] = {0};
    for (int64_t b = 0; b < blocks; b++) {
        float scale = scales[b], minimum = minimums[b];
        for (int j = 0; j < 16; j++) {
            float w_lo = (q[b * 16 + j] & 0x0f) * scale + minimum, w_hi = (q[b * 16 + j] >> 4) * scale + minimum;
            for (int64_t r = 0; r < rows; r++)
                acc[r] += w_lo * x[r * k + b * BLOCK + j] + w_hi * x[r * k + b * BLOCK + 16 + j];
        }
    }
    for (int64_t r = 0; r < rows; r++) y[r * out + n] = acc[r];
#endif
}

static void q8_row(const float *x, int64_t rows, int64_t k, const int8_t *q, const uint16_t *d,
                   float *y, int64_t n, int64_t out) {
    const int64_t blocks = k / BLOCK;
    float scales[blocks];
    halves_to_floats(d, scales, blocks);
#ifdef __AVX512F__
    if (rows == 1) {  /* independent sums in registers, as in q4_row */
        __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
        int64_t b = 0;
        for (; b + 2 <= blocks; b += 2) {
            sum0 = _mm512_fmadd_ps(q8_dot(q + b * BLOCK, x + b * BLOCK), _mm512_set1_ps(scales[b]), sum0);
            sum1 = _mm512_fmadd_ps(q8_dot(q + b * BLOCK + BLOCK, x + b * BLOCK + BLOCK), _mm512_set1_ps(scales[b + 1]), sum1);
        }
        if (b < blocks) sum0 = _mm512_fmadd_ps(q8_dot(q + b * BLOCK, x + b * BLOCK), _mm512_set1_ps(scales[b]), sum0);
        y[n] = _mm512_reduce_add_ps(_mm512_add_ps(sum0, sum1));
        return;
    }
    switch (rows) {  /* as in q4_row */
        case 2: q8_rows(x, 2, k, q, scales, y, n, out); break;
        case 3: q8_rows(x, 3, k, q, scales, y, n, out); break;
        case 4: q8_rows(x, 4, k, q, scales, y, n, out); break;
        case 5: q8_rows(x, 5, k, q, scales, y, n, out); break;
        case 6: q8_rows(x, 6, k, q, scales, y, n, out); break;
        case 7: q8_rows(x, 7, k, q, scales, y, n, out); break;
        default: q8_rows(x, 8, k, q, scales, y, n, out); break;
    }
#else
    float acc[MAX_ROWS] = {0};
    for (int64_t b = 0; b < blocks; b++) {
        float scale = scales[b];
        for (int j = 0; j < BLOCK; j++)
            for (int64_t r = 0; r < rows; r++) acc[r] += q[b * BLOCK + j] * scale * x[r * k + b * BLOCK + j];
    }
    for (int64_t r = 0; r < rows; r++) y[r * out + n] = acc[r];
#endif
}

/* R weight rows against M rows of x: one 16-lane sum per (x row, weight row), accumulated along K in
 * order and reduced once, whatever M, R or the thread split: a row's output is the same bits in a
 * batch of 8 as alone (a verification of drafts gives exactly what decoding them one by one gives). */
static inline __attribute__((always_inline)) void f32_tile(const float *x, const int M, const int R, int64_t k,
                                                           const float *w, float *y, int64_t n, int64_t out) {
#ifdef __AVX512F__
    __m512 acc[MAX_ROWS][4], weights[4];
    for (int m = 0; m < M; m++) for (int r = 0; r < R; r++) acc[m][r] = _mm512_setzero_ps();
    for (int64_t i = 0; i < k; i += 16) {
        for (int r = 0; r < R; r++) weights[r] = _mm512_loadu_ps(w + r * k + i);
        for (int m = 0; m < M; m++) {
            __m512 xv = _mm512_loadu_ps(x + m * k + i);
            for (int r = 0; r < R; r++) acc[m][r] = _mm512_fmadd_ps(weights[r], xv, acc[m][r]);
        }
    }
    for (int m = 0; m < M; m++) for (int r = 0; r < R; r++) y[m * out + n + r] = _mm512_reduce_add_ps(acc[m][r]);
#else
    for (int m = 0; m < M; m++)
        for (int r = 0; r < R; r++) {
            float lanes[16] = {0};
            for (int64_t i = 0; i < k; i++) lanes[i % 16] += w[r * k + i] * x[m * k + i];
            float sum = 0;
            for (int j = 0; j < 16; j++) sum += lanes[j];
            y[m * out + n + r] = sum;
        }
#endif
}

#define F32_TILE_CASES(R) switch (rows) { \
    case 1: f32_tile(x, 1, R, k, w, y, n, out); break; case 2: f32_tile(x, 2, R, k, w, y, n, out); break; \
    case 3: f32_tile(x, 3, R, k, w, y, n, out); break; case 4: f32_tile(x, 4, R, k, w, y, n, out); break; \
    case 5: f32_tile(x, 5, R, k, w, y, n, out); break; case 6: f32_tile(x, 6, R, k, w, y, n, out); break; \
    case 7: f32_tile(x, 7, R, k, w, y, n, out); break; default: f32_tile(x, 8, R, k, w, y, n, out); break; }

/* Output rows n .. n + R - 1; a constant (rows, R) lets the compiler keep every sum in a register. */
static void f32_rows(const float *x, int64_t rows, int64_t k, const float *w, float *y, int64_t n, int64_t out, int R) {
    if (R == 4) { F32_TILE_CASES(4) }
    else if (R == 2) { F32_TILE_CASES(2) }
    else { F32_TILE_CASES(1) }
}

/* One call's operands, for the worker pool (pool.h): a part of the calls below computes output rows [begin, end). */
struct linear_call {
    const float *x; int64_t chunk, k, out; float *y;
    const void *weights; const uint16_t *d, *m;  /* float32 / q4 / q8 weights and their block parameters */
    int step;  /* f32: weight rows per step */
};

static void f32_part(const void *p, int64_t begin, int64_t end) {
    const struct linear_call *c = p;
    const float *w = c->weights;
    for (int64_t s = begin; s < end; s++) f32_rows(c->x, c->chunk, c->k, w + s * c->step * c->k, c->y, s * c->step, c->out, c->step);
}

static void q4_part(const void *p, int64_t begin, int64_t end) {
    const struct linear_call *c = p;
    const uint8_t *q = c->weights;
    for (int64_t n = begin; n < end; n++)
        q4_row(c->x, c->chunk, c->k, q + n * (c->k / 2), c->d + n * (c->k / BLOCK), c->m + n * (c->k / BLOCK), c->y, n, c->out);
}

static void q8_part(const void *p, int64_t begin, int64_t end) {
    const struct linear_call *c = p;
    const int8_t *q = c->weights;
    for (int64_t n = begin; n < end; n++)
        q8_row(c->x, c->chunk, c->k, q + n * c->k, c->d + n * (c->k / BLOCK), c->y, n, c->out);
}

/* x (M, K) float32, w (N, K) float32, K a multiple of 16 -> y (M, N) float32. Four weight rows a step
 * for one or two rows of x (four load streams), two beyond (the sums must stay in 32 registers). */
void f32_linear(const float *x, int64_t rows, int64_t k, const float *w, int64_t out, float *y, int threads) {
    for (int64_t first = 0; first < rows; first += MAX_ROWS) {
        int64_t chunk = rows - first < MAX_ROWS ? rows - first : MAX_ROWS;
        int step = chunk <= 2 ? 4 : 2;
        int64_t steps = out / step;
        struct linear_call call = {x + first * k, chunk, k, out, y + first * out, w, NULL, NULL, step};
        pool_run(f32_part, &call, steps, threads);
        for (int64_t n = steps * step; n < out; n++)
            f32_rows(x + first * k, chunk, k, w + n * k, y + first * out, n, out, 1);
    }
}

/* x (M, K) float32, q (N, K/2) uint8, d and m (N, K/32) float16 bits -> y (M, N) float32. */
void q4_linear(const float *x, int64_t rows, int64_t k, const uint8_t *q, const uint16_t *d, const uint16_t *m,
               int64_t out, float *y, int threads) {
    for (int64_t first = 0; first < rows; first += MAX_ROWS) {
        int64_t chunk = rows - first < MAX_ROWS ? rows - first : MAX_ROWS;
        struct linear_call call = {x + first * k, chunk, k, out, y + first * out, q, d, m, 1};
        pool_run(q4_part, &call, out, threads);
    }
}

/* x (M, K) float32, q (N, K) int8, d (N, K/32) float16 bits -> y (M, N) float32. */
void q8_linear(const float *x, int64_t rows, int64_t k, const int8_t *q, const uint16_t *d,
               int64_t out, float *y, int threads) {
    for (int64_t first = 0; first < rows; first += MAX_ROWS) {
        int64_t chunk = rows - first < MAX_ROWS ? rows - first : MAX_ROWS;
        struct linear_call call = {x + first * k, chunk, k, out, y + first * out, q, d, NULL, 1};
        pool_run(q8_part, &call, out, threads);
    }
}

/* Dequantize q4 rows into w (N, K) float32: the same d * q + m (no fused multiply-add) as the encoder. */
void q4_dequantize(const uint8_t *q, const uint16_t *d, const uint16_t *m, int64_t out, int64_t k, float *w,
                   int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t n = 0; n < out; n++) {
        for (int64_t b = 0; b < k / BLOCK; b++) {
            float scale = half_to_float(d[n * (k / BLOCK) + b]), minimum = half_to_float(m[n * (k / BLOCK) + b]);
            const uint8_t *qb = q + n * (k / 2) + b * 16;
            float *wb = w + n * k + b * BLOCK;
#ifdef __AVX512F__
            __m512i packed = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)qb));
            __m512 scales = _mm512_set1_ps(scale), minimums = _mm512_set1_ps(minimum);
            __m512 q_lo = _mm512_cvtepi32_ps(_mm512_and_si512(packed, _mm512_set1_epi32(0x0f)));
            __m512 q_hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(packed, 4));
            _mm512_storeu_ps(wb, _mm512_add_ps(_mm512_mul_ps(q_lo, scales), minimums));
            _mm512_storeu_ps(wb + 16, _mm512_add_ps(_mm512_mul_ps(q_hi, scales), minimums));
            continue;
#endif
            for (int j = 0; j < 16; j++) {
                wb[j] = (float)(qb[j] & 0x0f) * scale + minimum;  /* built with -ffp-contract=off */
                wb[16 + j] = (float)(qb[j] >> 4) * scale + minimum;
            }
        }
    }
}

/* Dequantize q8 rows into w (N, K) float32. */
void q8_dequantize(const int8_t *q, const uint16_t *d, int64_t out, int64_t k, float *w, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t n = 0; n < out; n++)
        for (int64_t b = 0; b < k / BLOCK; b++) {
            float scale = half_to_float(d[n * (k / BLOCK) + b]);
            for (int j = 0; j < BLOCK; j++) w[n * k + b * BLOCK + j] = (float)q[n * k + b * BLOCK + j] * scale;
        }
}
