/* fp8 block-scaled grouped GEMM for CPUs with AVX-512 BF16 (VDPBF16PS), fastest with a few
   tokens per expert (decode), where it is a matrix-vector product bound by reading the fp8 weight
   once. See kernels_ref/native_cpu.py for how it is built and called.

   1. The weight's block scale is folded into the activations, which are few: a thread that takes
      a 128-row block of an expert first computes x' = x_q * x_scale * w_scale[row block, k block]
      * 2^100 in bf16 for that expert's tokens.
   2. In registers, 32 fp8 codes are sign-extended to 16 bits, shifted left by 4 and masked with
      0x87F0: the bf16 bit pattern of code * 2^-120 (e4m3's exponent bias is 7, bf16's 127; the
      mask clears the copies of the sign that the extension left in bits 11 to 14).
   3. VDPBF16PS multiplies them with x' in pairs and accumulates in fp32; a tile of 4 weight rows
      x 4 tokens keeps 16 accumulators in registers so each load feeds 4 products.
   4. The row sums are multiplied by 2^20 (= 2^120 / 2^100).
   How many weight rows a tile sweeps together (1 or 4) is the caller's, chosen by timing
   (kernels_ref.fp8_gemm): one row streams the weight sequentially and keeps the activations in
   L1, four rows feed each loaded activation to four products and stream four rows at once,
   which on a Zen 4 read one token's expert 1.3x faster than one row did.
   VDPBF16PS treats subnormal inputs as zero, so e4m3 subnormals (under 2^-6 of a block's largest
   value) drop out; the bf16 rounding of x' adds a relative error near 2^-9. */
#include <immintrin.h>
#include <stdint.h>
#include <omp.h>
#include <stdlib.h>

#define INLINE static inline __attribute__((always_inline))
#define CHUNK_TOKENS 256

/* out[i][:] = bf16(x_q[i][:] * x_scale[i][kb] * s[kb] * 2^100) for m tokens: the activations
   pre-scaled for one 128-row block of one expert, zero past k. The fp8 codes are widened
   exactly through float16 bit patterns (code * 2^-8, hence the 2^8 below). */
INLINE void prescale(const int8_t* x_q, const float* x_scale, const float* s, int64_t m, int64_t k,
                     int64_t k_padded, uint16_t* out) {
  const int64_t k_blocks = k_padded / 128;
  for (int64_t i = 0; i < m; i++) {
    for (int64_t kb = 0; kb < k_blocks; kb++) {
      const __m512 f = _mm512_set1_ps(x_scale[i * k_blocks + kb] * s[kb] * 0x1p108f);
      for (int64_t j = kb * 128; j < kb * 128 + 128; j += 32) {
        const int64_t left = k - j;
        const __mmask32 valid = left >= 32 ? 0xFFFFFFFFu : left <= 0 ? 0u : (1u << left) - 1u;
        __m512i h = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(valid, x_q + i * k + j));
        h = _mm512_and_si512(_mm512_slli_epi16(h, 7), _mm512_set1_epi16((short)0xBF80));
        const __m512 lo = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), f);
        const __m512 hi = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), f);
        _mm512_storeu_si512(out + i * k_padded + j, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
      }
    }
  }
}

/* y[i][r] for `rows` weight rows x `tokens` tokens (constants 1..4 at each call site, so the
   loops unroll and the 16 accumulators stay in registers). q: the first row's codes; x: the
   first token's pre-scaled bf16 activations, k_padded long (zeros past k). */
INLINE void tile(const int8_t* q, const uint16_t* x, int64_t k, int64_t k_padded,
                 int rows, int tokens, float* y, int64_t n) {
  const __m512i keep = _mm512_set1_epi16((short)0x87F0);
  __m512 acc[4][4];
  for (int r = 0; r < rows; r++)
    for (int i = 0; i < tokens; i++) acc[r][i] = _mm512_setzero_ps();
  for (int64_t k0 = 0; k0 < k_padded; k0 += 32) {
    /* masked loads read nothing past the end of a row */
    const int64_t left = k - k0;
    const __mmask32 valid = left >= 32 ? 0xFFFFFFFFu : left <= 0 ? 0u : (1u << left) - 1u;
    __m512i w[4];
    for (int r = 0; r < rows; r++) {
      _mm_prefetch((const char*)(q + (r + rows) * k + k0), _MM_HINT_T0); /* the next tile */
      const __m512i codes = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(valid, q + r * k + k0));
      w[r] = _mm512_and_si512(_mm512_slli_epi16(codes, 4), keep);
    }
    for (int i = 0; i < tokens; i++) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + i * k_padded + k0);
      for (int r = 0; r < rows; r++) acc[r][i] = _mm512_dpbf16_ps(acc[r][i], (__m512bh)w[r], xv);
    }
  }
  for (int r = 0; r < rows; r++)
    for (int i = 0; i < tokens; i++) y[i * n + r] = _mm512_reduce_add_ps(acc[r][i]) * 0x1p20f;
}

/* One weight row x one token (the decode case of a single token per expert): as tile(q, x, .., 1, 1, ..), but
   with four accumulators over alternating 32-column steps, so the products are not a single chain of
   dependent VDPBF16PS (whose latency, not the memory, set the pace: 10 GB/s per core with the weight in L2). */
INLINE void row_dot(const int8_t* q, const uint16_t* x, int64_t k, int64_t k_padded, float* y) {
  const __m512i keep = _mm512_set1_epi16((short)0x87F0);
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  int64_t k0 = 0;
  for (; k0 + 128 <= k; k0 += 128) {
    /* the next row, as tile() asks for it: the weight streams from memory */
    _mm_prefetch((const char*)(q + k + k0), _MM_HINT_T0);
    _mm_prefetch((const char*)(q + k + k0 + 64), _MM_HINT_T0);
    for (int u = 0; u < 4; u++) {
      const __m512i codes = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)(q + k0 + 32 * u)));
      const __m512i w = _mm512_and_si512(_mm512_slli_epi16(codes, 4), keep);
      acc[u] = _mm512_dpbf16_ps(acc[u], (__m512bh)w, (__m512bh)_mm512_loadu_si512(x + k0 + 32 * u));
    }
  }
  for (; k0 < k_padded; k0 += 32) {  /* the tail, masked as in tile() */
    const int64_t left = k - k0;
    const __mmask32 valid = left >= 32 ? 0xFFFFFFFFu : left <= 0 ? 0u : (1u << left) - 1u;
    const __m512i codes = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(valid, q + k0));
    const __m512i w = _mm512_and_si512(_mm512_slli_epi16(codes, 4), keep);
    acc[0] = _mm512_dpbf16_ps(acc[0], (__m512bh)w, (__m512bh)_mm512_loadu_si512(x + k0));
  }
  *y = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]))) * 0x1p20f;
}

#define TILE_CASES(ROWS)                                                   \
  switch (tokens) {                                                        \
    case 4: tile(qr, xt, k, k_padded, ROWS, 4, yt, n); break;              \
    case 3: tile(qr, xt, k, k_padded, ROWS, 3, yt, n); break;              \
    case 2: tile(qr, xt, k, k_padded, ROWS, 2, yt, n); break;              \
    default: tile(qr, xt, k, k_padded, ROWS, 1, yt, n); break;             \
  }

/* Sweeps rows row_begin:row_end of expert e for m tokens pre-scaled in xs, writing y rows. */
INLINE void sweep(const int8_t* q, const uint16_t* xs, float* y, int64_t e, int64_t row_begin,
                  int64_t row_end, int64_t m, int64_t n, int64_t k, int64_t k_padded, int tile_rows) {
  for (int64_t row = row_begin; row < row_end; row += tile_rows) {
    const int rows = row_end - row < tile_rows ? (int)(row_end - row) : tile_rows;
    const int8_t* qr = q + (e * n + row) * k;
    if (rows == 1 && m == 1) {
      row_dot(qr, xs, k, k_padded, y + row);
      continue;
    }
    for (int64_t i = 0; i < m; i += 4) {
      const int tokens = m - i < 4 ? (int)(m - i) : 4;
      const uint16_t* xt = xs + i * k_padded;
      float* yt = y + i * n + row;
      switch (rows) {
        case 4: TILE_CASES(4) break;
        case 3: TILE_CASES(3) break;
        case 2: TILE_CASES(2) break;
        default: TILE_CASES(1) break;
      }
    }
  }
}

/* Group g multiplies rows starts[g]:starts[g + 1] of x by expert expert_ids[g].
   q: [experts][n][k] fp8 codes; w_scale: [experts][ceil(n/128)][ceil(k/128)];
   x_q: [t][k] fp8 codes; x_scale: [t][ceil(k/128)]; y: [t][n] fp32. A work item is one
   128-row block of one group's expert: it pre-scales up to CHUNK_TOKENS of the group's tokens
   for that block, sweeps the block, and repeats for the next chunk. Items are handed out
   dynamically because groups differ in size. tile_rows: weight rows per tile, 1 or 4. Returns 0,
   1 if out of memory, or 2 if tile_rows is neither. */
int fp8_grouped_gemm(const int8_t* q, const float* w_scale, const int64_t* expert_ids,
                     const int64_t* starts, int64_t groups, const int8_t* x_q, const float* x_scale,
                     float* y, int64_t t, int64_t n, int64_t k, int num_threads, int tile_rows) {
  if (tile_rows != 1 && tile_rows != 4) return 2;
  const int64_t n_blocks = (n + 127) / 128, k_blocks = (k + 127) / 128, k_padded = k_blocks * 128;
  const size_t buffer_elements = (size_t)CHUNK_TOKENS * k_padded;
  uint16_t* buffers = malloc(buffer_elements * 2 * num_threads);
  if (buffers == NULL) return 1;
  #pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
  for (int64_t item = 0; item < groups * n_blocks; item++) {
    uint16_t* xs = buffers + buffer_elements * omp_get_thread_num();
    const int64_t g = item / n_blocks, nb = item % n_blocks, e = expert_ids[g];
    const int64_t row_end = n < (nb + 1) * 128 ? n : (nb + 1) * 128;
    for (int64_t t0 = starts[g]; t0 < starts[g + 1]; t0 += CHUNK_TOKENS) {
      const int64_t m = starts[g + 1] - t0 < CHUNK_TOKENS ? starts[g + 1] - t0 : CHUNK_TOKENS;
      prescale(x_q + t0 * k, x_scale + t0 * k_blocks, w_scale + (e * n_blocks + nb) * k_blocks, m, k, k_padded, xs);
      sweep(q, xs, y + t0 * n, e, nb * 128, row_end, m, n, k, k_padded, tile_rows);
    }
  }
  free(buffers);
  return 0;
}
