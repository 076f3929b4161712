/* Low-bit weight-only matrix kernels for batch-1..8 decoding: y (M, N) = x (M, K) @ W^T.
 *
 * Weights are stored in blocks of 32 along K, each with float16 parameters:
 *   q4: w = d * q + m, q in 0..15, two per byte (byte j of a block holds q[j] | q[j + 16] << 4)
 *   q8: w = d * q,     q in -127..127 (int8)
 * Activations stay float32. Each weight block is dequantized once into registers and used for
 * every row of x, so the weights are read once per call whatever M is. Rows of W are split over
 * OpenMP threads. Built by models/lowbit/native.py (gcc -O3 -march=native -fopenmp -ffp-contract=off).
 */
#include <stdint.h>
#include <string.h>
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

/* One output row n for up to MAX_ROWS rows of x. */
static void q4_row(const float *x, int64_t rows, int64_t k, const uint8_t *q, const uint16_t *d,
                   const uint16_t *m, float *y, int64_t n, int64_t out) {
    const int64_t blocks = k / BLOCK;
    float scales[blocks], minimums[blocks];
    halves_to_floats(d, scales, blocks);
    halves_to_floats(m, minimums, blocks);
#ifdef __AVX512F__
    const __m512i low_mask = _mm512_set1_epi32(0x0f);
    if (rows == 1) {  /* four independent sums: one fused multiply-add chain would bound the speed */
        __m512 sum[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int64_t b = 0; b < blocks; b++) {
            __m512i packed = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + b * 16)));
            __m512 scale = _mm512_set1_ps(scales[b]), minimum = _mm512_set1_ps(minimums[b]);
            __m512 w_lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(packed, low_mask)), scale, minimum);
            __m512 w_hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(packed, 4)), scale, minimum);
            sum[2 * (b & 1)] = _mm512_fmadd_ps(w_lo, _mm512_loadu_ps(x + b * BLOCK), sum[2 * (b & 1)]);
            sum[2 * (b & 1) + 1] = _mm512_fmadd_ps(w_hi, _mm512_loadu_ps(x + b * BLOCK + 16), sum[2 * (b & 1) + 1]);
        }
        y[n] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(sum[0], sum[1]), _mm512_add_ps(sum[2], sum[3])));
        return;
    }
    __m512 acc[MAX_ROWS];
    for (int64_t r = 0; r < rows; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; b++) {
        __m512i packed = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + b * 16)));
        __m512 scale = _mm512_set1_ps(scales[b]), minimum = _mm512_set1_ps(minimums[b]);
        __m512 w_lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(packed, low_mask)), scale, minimum);
        __m512 w_hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(packed, 4)), scale, minimum);
        const float *xb = x + b * BLOCK;
        for (int64_t r = 0; r < rows; r++) {
            acc[r] = _mm512_fmadd_ps(w_lo, _mm512_loadu_ps(xb + r * k), acc[r]);
            acc[r] = _mm512_fmadd_ps(w_hi, _mm512_loadu_ps(xb + r * k + 16), acc[r]);
        }
    }
    for (int64_t r = 0; r < rows; r++) y[r * out + n] = _mm512_reduce_add_ps(acc[r]);
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
    if (rows == 1) {  /* four independent sums, as in q4_row */
        __m512 sum[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int64_t b = 0; b < blocks; b++) {
            __m512 scale = _mm512_set1_ps(scales[b]);
            __m512 w_lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + b * BLOCK))));
            __m512 w_hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + b * BLOCK + 16))));
            __m512 dot = _mm512_fmadd_ps(w_hi, _mm512_loadu_ps(x + b * BLOCK + 16), _mm512_mul_ps(w_lo, _mm512_loadu_ps(x + b * BLOCK)));
            sum[b & 3] = _mm512_fmadd_ps(dot, scale, sum[b & 3]);
        }
        y[n] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(sum[0], sum[1]), _mm512_add_ps(sum[2], sum[3])));
        return;
    }
    __m512 acc[MAX_ROWS];
    for (int64_t r = 0; r < rows; r++) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; b++) {
        __m512 scale = _mm512_set1_ps(scales[b]);
        __m512 w_lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + b * BLOCK)))), scale);
        __m512 w_hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + b * BLOCK + 16)))), scale);
        const float *xb = x + b * BLOCK;
        for (int64_t r = 0; r < rows; r++) {
            acc[r] = _mm512_fmadd_ps(w_lo, _mm512_loadu_ps(xb + r * k), acc[r]);
            acc[r] = _mm512_fmadd_ps(w_hi, _mm512_loadu_ps(xb + r * k + 16), acc[r]);
        }
    }
    for (int64_t r = 0; r < rows; r++) y[r * out + n] = _mm512_reduce_add_ps(acc[r]);
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

/* x (M, K) float32, q (N, K/2) uint8, d and m (N, K/32) float16 bits -> y (M, N) float32. */
void q4_linear(const float *x, int64_t rows, int64_t k, const uint8_t *q, const uint16_t *d, const uint16_t *m,
               int64_t out, float *y, int threads) {
    for (int64_t first = 0; first < rows; first += MAX_ROWS) {
        int64_t chunk = rows - first < MAX_ROWS ? rows - first : MAX_ROWS;
        #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
        for (int64_t n = 0; n < out; n++)
            q4_row(x + first * k, chunk, k, q + n * (k / 2), d + n * (k / BLOCK), m + n * (k / BLOCK),
                   y + first * out, n, out);
    }
}

/* x (M, K) float32, q (N, K) int8, d (N, K/32) float16 bits -> y (M, N) float32. */
void q8_linear(const float *x, int64_t rows, int64_t k, const int8_t *q, const uint16_t *d,
               int64_t out, float *y, int threads) {
    for (int64_t first = 0; first < rows; first += MAX_ROWS) {
        int64_t chunk = rows - first < MAX_ROWS ? rows - first : MAX_ROWS;
        #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
        for (int64_t n = 0; n < out; n++)
            q8_row(x + first * k, chunk, k, q + n * k, d + n * (k / BLOCK), y + first * out, n, out);
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
