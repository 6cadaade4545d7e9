/* fp8 block-scaled grouped GEMM on Intel AMX (TDPBF16PS), for CPUs with amx_bf16.
   See kernels_ref/native_cpu.py for why native code and how it is built and called.

   # G = groups, T = token rows, N = output features (weight rows), K = input features
   y[t][r] = sum_k (x_q[t][k] * x_scale[t][k/128]) * (w_q[e][r][k] * w_scale[e][r/128][k/128])

   AMX multiplies a 16 x 32 bf16 tile A by a 32 x 16 tile B held in pairs ("VNNI": row i of B
   holds k = 2i, 2i+1 of 16 columns). The weights play A, so their rows convert straight from the
   fp8 layout; the tokens play B, converted and transposed (16 x 16 blocks of pairs) into blocks
   of 16 tokens. A work item is one group, one chunk of chunk_blocks token blocks and one 128-row
   block of the weight: it converts the weight 32 rows (a strip) at a time into a per-thread
   buffer that stays in L2 and multiplies every token block of the chunk against it, 2 x 2 tiles
   at a time. Three ways to apply the weight's block scale (scale_mode):
   - SCALE_WEIGHTS: as the weights convert (one fp32 multiply per weight), the tokens packed once
     per call. Exact up to bf16 rounding, subnormal weights included.
   - SCALE_TOKENS: folded into the tokens, packed again for each item; the weights convert with
     three integer operations (code * 2^-120 as bf16 bits), the tokens carry 2^100 and the sums
     are multiplied by 2^20.
   - SCALE_SUMS: the tokens packed once (carrying 2^100), the weights as bits, and the sums of each
     128-column block taken out of the tiles and added to fp32 accumulators times that block's
     scale * 2^20: a store and 16 multiply-adds per tile per 4 tile products.
   In the last two, AMX reads bf16 subnormals as zero, so e4m3 subnormal weights (under 2^-6 of a
   block's largest) drop out, as in the AVX-512 kernel. chunk_blocks and the mode are what the
   autotuner picks per shape class. */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define STRIP_ROWS 32
enum { SCALE_WEIGHTS = 0, SCALE_TOKENS = 1, SCALE_SUMS = 2 };
/* columns converted at a time where each weight is used once: 32 rows x 256 fp8 codes, 16 KiB of bf16 */
#define FUSED_COLUMNS 256
/* the bits-only fused path's columns per step */
#define STEP_COLUMNS 64
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* Linux hands out the AMX register state only to processes that ask for it. Returns 0 if granted. */
int amx_request(void) { return (int)syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); }

typedef struct {
  uint8_t palette_id, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} tile_config;

static void configure_tiles(void) {
  tile_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette_id = 1;
  for (int i = 0; i < 8; i++) { cfg.rows[i] = 16; cfg.colsb[i] = 64; }
  _tile_loadconfig(&cfg);
}

static inline __mmask32 mask_of(int64_t left) {
  return left >= 32 ? 0xFFFFFFFFu : left <= 0 ? 0u : (1u << left) - 1u;
}

/* 32 fp8 codes -> bf16 code * 2^-120 (bit moves: the exponent bias grows by 120). */
static inline __m512i codes_to_bf16_bits(const int8_t* q, __mmask32 valid) {
  const __m512i h = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(valid, q));
  return _mm512_and_si512(_mm512_slli_epi16(h, 4), _mm512_set1_epi16((short)0x87F0));
}

/* 32 fp8 codes -> bf16 code * factor * 2^-8: widened exactly through float16 bit patterns (code *
   2^-8; e4m3 subnormals land on float16 subnormals, which the conversion to fp32 takes in hardware,
   where an fp32 subnormal operand would take a microcode assist per multiply), one multiply, one
   rounding. */
static inline __m512i codes_to_bf16_scaled(const int8_t* q, __mmask32 valid, __m512 factor) {
  __m512i h = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(valid, q));
  h = _mm512_and_si512(_mm512_slli_epi16(h, 7), _mm512_set1_epi16((short)0xBF80));
  const __m512 lo = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), factor);
  const __m512 hi = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), factor);
  return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* dst[i][j] = src[j][i] for a 16 x 16 block of 32-bit words (bf16 pairs); src rows src_stride words apart. */
static inline void transpose_16x16(const uint32_t* src, int64_t src_stride, uint32_t* dst) {
  __m512i r[16], t[16];
  for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512(src + i * src_stride);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int h = 0; h < 16; h += 8)
    for (int i = 0; i < 4; i++) {
      t[h + i] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0x88);
      t[h + i + 4] = _mm512_shuffle_i32x4(r[h + i], r[h + i + 4], 0xdd);
    }
  for (int i = 0; i < 8; i++) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
  }
  for (int i = 0; i < 16; i++) _mm512_storeu_si512(dst + i * 16, r[i]);
}

/* Tokens [t0, t0 + min(m, 16)) into one packed block out[k/2][16][2] bf16, zero past m and k:
   x_q * x_scale * (w_scale_row[kb] * 2^100 if w_scale_row else factor). The codes are widened
   exactly through float16 bit patterns (code * 2^-8). rows: scratch of 16 x k_padded bf16. */
static void pack_block(const int8_t* x_q, const float* x_scale, const float* w_scale_row, float factor, int64_t t0,
                       int64_t m, int64_t k, int64_t k_padded, uint16_t* rows, uint32_t* out) {
  const int64_t k_blocks = k_padded / 128, valid_rows = m < 16 ? m : 16;
  memset(rows + valid_rows * k_padded, 0, (size_t)(16 - valid_rows) * k_padded * 2);
  for (int64_t j = 0; j < valid_rows; j++) {
    for (int64_t kb = 0; kb < k_blocks; kb++) {
      const float w = (w_scale_row ? w_scale_row[kb] * 0x1p100f : factor) * 0x1p8f;
      const __m512 f = _mm512_set1_ps(x_scale[(t0 + j) * k_blocks + kb] * w);
      for (int64_t c = kb * 128; c < kb * 128 + 128; c += 32) {
        __m512i h = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mask_of(k - c), x_q + (t0 + j) * k + c));
        h = _mm512_and_si512(_mm512_slli_epi16(h, 7), _mm512_set1_epi16((short)0xBF80));
        const __m512 lo = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(h)), f);
        const __m512 hi = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1)), f);
        _mm512_storeu_si512(rows + j * k_padded + c, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
      }
    }
  }
  for (int64_t p = 0; p < k_padded / 2; p += 16) transpose_16x16((const uint32_t*)rows + p, k_padded / 2, out + p * 16);
}

/* C tiles 0..3 += the strip's two 16-row tiles x token blocks b0 and b1 over columns
   [k_begin, k_end) (the strip holds those columns, rows stride elements apart); with b1 NULL
   only tiles 0 and 2 (b0's). */
static inline void accumulate(const uint16_t* strip, int64_t stride, const uint32_t* b0, const uint32_t* b1,
                              int64_t k_begin, int64_t k_end) {
  for (int64_t k0 = k_begin; k0 < k_end; k0 += 32) {
    _tile_loadd(4, strip + k0 - k_begin, stride * 2);
    _tile_loadd(5, strip + 16 * stride + k0 - k_begin, stride * 2);
    _tile_loadd(6, b0 + k0 / 2 * 16, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(2, 5, 6);
    if (b1) {
      _tile_loadd(7, b1 + k0 / 2 * 16, 64);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
}

/* y[tok0 + t][row0 + r] = C[r][t] * out_factor for the strip's rows and up to 32 tokens. */
static inline void store_tiles(float* y, int64_t n, int64_t row0, int64_t rows, int64_t tok0, int64_t toks,
                               float out_factor) {
  float c[4][16][16];
  _tile_stored(0, c[0], 64); _tile_stored(1, c[1], 64); _tile_stored(2, c[2], 64); _tile_stored(3, c[3], 64);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t t = 0; t < toks; t++) y[(tok0 + t) * n + row0 + r] = c[(r >= 16) * 2 + (t >= 16)][r & 15][t & 15] * out_factor;
}

/* acc[tile] += the tiles' sums over columns [k_begin, k_end), each 128-column block's times
   scales[block] * 2^20 (SCALE_SUMS); the strip holds columns from k_begin, rows stride apart. */
static void accumulate_scaled(const uint16_t* strip, int64_t stride, const uint32_t* b0, const uint32_t* b1,
                              int64_t k_begin, int64_t k_end, const float* scales, float acc[4][16][16]) {
  float c[4][16][16];
  const int tiles = b1 ? 4 : 3;  /* tiles 0 and 2 (b0's), and 1 and 3 with b1 */
  for (int64_t kb0 = k_begin; kb0 < k_end; kb0 += 128) {
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    accumulate(strip + (kb0 - k_begin), stride, b0, b1, kb0, kb0 + 128 < k_end ? kb0 + 128 : k_end);
    _tile_stored(0, c[0], 64); _tile_stored(2, c[2], 64);
    if (b1) { _tile_stored(1, c[1], 64); _tile_stored(3, c[3], 64); }
    const float f = scales[kb0 / 128] * 0x1p20f;
    for (int t = 0; t < tiles; t += b1 ? 1 : 2)
      for (int r = 0; r < 16; r++)
        for (int j = 0; j < 16; j++) acc[t][r][j] += c[t][r][j] * f;
  }
}

/* y[tok0 + t][row0 + r] = acc[tile][r][t] for the strip's rows and up to 32 tokens. */
static void store_sums(float* y, int64_t n, int64_t row0, int64_t rows, int64_t tok0, int64_t toks,
                       float acc[4][16][16]) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t t = 0; t < toks; t++) y[(tok0 + t) * n + row0 + r] = acc[(r >= 16) * 2 + (t >= 16)][r & 15][t & 15];
}

/* Columns [k_begin, k_end) of weight rows [row0, row0 + STRIP_ROWS) of expert e into bf16 strip
   rows stride elements apart, starting at column k_begin (zero rows past n). */
static void convert_strip(const int8_t* q, const float* w_scale, int64_t e, int64_t row0, int64_t n, int64_t k,
                          int64_t k_padded, int64_t k_begin, int64_t k_end, int bits_only, uint16_t* strip,
                          int64_t stride) {
  const int64_t n_blocks = (n + 127) / 128, k_blocks = k_padded / 128;
  const float* scales = w_scale + (e * n_blocks + row0 / 128) * k_blocks;
  for (int64_t r = 0; r < STRIP_ROWS; r++) {
    uint16_t* out = strip + r * stride - k_begin;
    if (row0 + r >= n) { memset(out + k_begin, 0, (k_end - k_begin) * 2); continue; }
    const int8_t* codes = q + (e * n + row0 + r) * k;
    /* the row's next slice: 32 rows read a slice each are more streams than the hardware prefetcher follows */
    for (int64_t c = k_end; c < k_end + (k_end - k_begin) && c < k; c += 64) _mm_prefetch((const char*)(codes + c), _MM_HINT_T0);
    for (int64_t c = k_begin; c < k_end; c += 32) {
      const __m512 f = _mm512_set1_ps(scales[c / 128] * 0x1p8f);
      _mm512_storeu_si512(out + c, bits_only ? codes_to_bf16_bits(codes + c, mask_of(k - c))
                                                   : codes_to_bf16_scaled(codes + c, mask_of(k - c), f));
    }
  }
}

/* Columns [c, c + STEP_COLUMNS) of the strip's weight rows (codes: its first row's, rows k apart; the first
   `rows` real, zeros after) as bf16 bits (code * 2^-120) into buf, rows STEP_COLUMNS elements apart. Each row
   also asks for the same columns of the next strip into L2 (32 rows further): 32 rows advancing a cache line
   each per step are more streams than the hardware prefetcher follows. A fixed distance ahead within the row
   ran out at the rows' ends: with K = 2048 a strip is 32 rows of 2 KB, and the down projection's weight
   streamed at 7 GB/s per core against 9 with the next strip's columns asked for. */
static inline void convert_step(const int8_t* codes, int64_t k, int64_t c, int64_t rows, uint16_t* buf) {
  const __m512i keep = _mm512_set1_epi16((short)0x87F0);
  if (c + STEP_COLUMNS <= k) {
    for (int64_t r = 0; r < rows; r++) {
      const int8_t* src = codes + r * k + c;
      _mm_prefetch((const char*)(src + STRIP_ROWS * k), _MM_HINT_T1);
      _mm_prefetch((const char*)(src + 2 * STEP_COLUMNS), _MM_HINT_T0);
      const __m512i lo = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)src));
      const __m512i hi = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)(src + 32)));
      _mm512_storeu_si512(buf + r * STEP_COLUMNS, _mm512_and_si512(_mm512_slli_epi16(lo, 4), keep));
      _mm512_storeu_si512(buf + r * STEP_COLUMNS + 32, _mm512_and_si512(_mm512_slli_epi16(hi, 4), keep));
    }
  } else {
    for (int64_t r = 0; r < rows; r++) {
      _mm512_storeu_si512(buf + r * STEP_COLUMNS, codes_to_bf16_bits(codes + r * k + c, mask_of(k - c)));
      _mm512_storeu_si512(buf + r * STEP_COLUMNS + 32, codes_to_bf16_bits(codes + r * k + c + 32, mask_of(k - c - 32)));
    }
  }
  for (int64_t r = rows; r < STRIP_ROWS; r++) {
    _mm512_storeu_si512(buf + r * STEP_COLUMNS, _mm512_setzero_si512());
    _mm512_storeu_si512(buf + r * STEP_COLUMNS + 32, _mm512_setzero_si512());
  }
}

/* The fused path of the bits-only modes (up to 32 tokens, each weight used once): C tiles 0..3 = a strip of
   `rows` weight rows (codes: the first one's) x token blocks b0 and b1 (b1 NULL: tiles 0 and 2 only), over all
   columns. The weights convert STEP_COLUMNS columns at a time into one of two small buffers while the tiles
   multiply the other, so the vector unit's conversion and the tile unit's products overlap, and a tile load
   never waits for the stores that just wrote its rows. scales (SCALE_SUMS): each 128-column block's sums go
   to acc times scales[block] * 2^20; NULL: the sums stay in the tiles. bufs: 2 x STRIP_ROWS x STEP_COLUMNS. */
static void stream_strip(const int8_t* codes, int64_t rows, int64_t k, int64_t k_padded, const uint32_t* b0,
                         const uint32_t* b1, const float* scales, uint16_t* bufs, float acc[4][16][16]) {
  float c_tiles[4][16][16];
  _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
  if (scales) memset(acc, 0, sizeof(float) * 4 * 16 * 16);
  for (int64_t c = 0, j = 0; c <= k_padded; c += STEP_COLUMNS, j ^= 1) {
    if (c < k_padded) convert_step(codes, k, c, rows, bufs + j * STRIP_ROWS * STEP_COLUMNS);
    if (c == 0) continue;
    const int64_t p = c - STEP_COLUMNS;  /* the columns converted one step ago */
    const uint16_t* buf = bufs + (j ^ 1) * STRIP_ROWS * STEP_COLUMNS;
    for (int64_t h = 0; h < STEP_COLUMNS; h += 32) {
      _tile_loadd(4, buf + h, STEP_COLUMNS * 2);
      _tile_loadd(5, buf + 16 * STEP_COLUMNS + h, STEP_COLUMNS * 2);
      _tile_loadd(6, b0 + (p + h) / 2 * 16, 64);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(2, 5, 6);
      if (b1) {
        _tile_loadd(7, b1 + (p + h) / 2 * 16, 64);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
      }
    }
    if (scales && (p + STEP_COLUMNS) % 128 == 0) {
      _tile_stored(0, c_tiles[0], 64); _tile_stored(2, c_tiles[2], 64);
      if (b1) { _tile_stored(1, c_tiles[1], 64); _tile_stored(3, c_tiles[3], 64); }
      const float f = scales[p / 128] * 0x1p20f;
      for (int t = 0; t < 4; t += b1 ? 1 : 2)
        for (int r = 0; r < 16; r++)
          for (int i = 0; i < 16; i++) acc[t][r][i] += c_tiles[t][r][i] * f;
      _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    }
  }
}

/* Same arguments as fp8_grouped_gemm (the AVX-512 kernel), plus chunk_blocks (token blocks of 16
   per work item) and scale_mode (see above). Returns 0, or 1 if out of memory. */
int fp8_grouped_gemm_amx(const int8_t* q, const float* w_scale, const int64_t* expert_ids, const int64_t* starts,
                         int64_t groups, const int8_t* x_q, const float* x_scale, float* y, int64_t t, int64_t n,
                         int64_t k, int num_threads, int64_t chunk_blocks, int scale_mode) {
  const int scale_in_tokens = scale_mode == SCALE_TOKENS, bits_only = scale_mode != SCALE_WEIGHTS;
  const int64_t n_blocks = (n + 127) / 128, k_blocks = (k + 127) / 128, k_padded = k_blocks * 128;
  const int64_t block_elems = 16 * k_padded;
  const float out_factor = scale_in_tokens ? 0x1p20f : 1.0f, pack_factor = scale_mode == SCALE_SUMS ? 0x1p100f : 1.0f;
  int64_t* block_start = malloc((groups + 1) * sizeof(int64_t));
  int64_t* item_start = malloc((groups + 1) * sizeof(int64_t));
  if (!block_start || !item_start) { free(block_start); free(item_start); return 1; }
  block_start[0] = item_start[0] = 0;
  for (int64_t g = 0; g < groups; g++) {
    const int64_t blocks = (starts[g + 1] - starts[g] + 15) / 16;
    block_start[g + 1] = block_start[g] + blocks;
    item_start[g + 1] = item_start[g] + n_blocks * ((blocks + chunk_blocks - 1) / chunk_blocks);
  }
  const int64_t total_blocks = block_start[groups];
  /* per thread: a strip, the rows being packed, and (scale_in_tokens) the item's packed chunk */
  const size_t strip_elems = (size_t)STRIP_ROWS * (k_padded > FUSED_COLUMNS ? k_padded : FUSED_COLUMNS);
  const size_t per_thread = strip_elems + (size_t)(16 + (scale_in_tokens ? 16 * chunk_blocks : 0)) * k_padded;
  uint16_t* packed = scale_in_tokens ? NULL : aligned_alloc(64, (size_t)total_blocks * block_elems * 2 + 64);
  uint16_t* scratch = aligned_alloc(64, (size_t)num_threads * per_thread * 2);
  if ((!scale_in_tokens && !packed) || !scratch) {
    free(packed); free(scratch); free(block_start); free(item_start);
    return 1;
  }
  #pragma omp parallel num_threads(num_threads)
  {
    uint16_t* strip = scratch + (size_t)omp_get_thread_num() * per_thread;
    uint16_t* rows = strip + strip_elems;
    uint32_t* chunk_packed = (uint32_t*)(rows + 16 * k_padded);
    if (!scale_in_tokens) {
      /* 1. Every group's tokens, packed once. */
      #pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < total_blocks; b++) {
        int64_t g = 0;
        while (block_start[g + 1] <= b) g++;
        const int64_t t0 = starts[g] + (b - block_start[g]) * 16;
        pack_block(x_q, x_scale, NULL, pack_factor, t0, starts[g + 1] - t0, k, k_padded, rows,
                   (uint32_t*)(packed + b * block_elems));
      }
    }
    /* 2. Items (group, chunk, row block), row blocks innermost so threads share a chunk's tokens. */
    configure_tiles();
    #pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < item_start[groups]; item++) {
      int64_t g = 0;
      while (item_start[g + 1] <= item) g++;
      const int64_t local = item - item_start[g], chunk = local / n_blocks, nb = local % n_blocks;
      const int64_t e = expert_ids[g], m = starts[g + 1] - starts[g], blocks = (m + 15) / 16;
      const int64_t first = chunk * chunk_blocks, last = first + chunk_blocks < blocks ? first + chunk_blocks : blocks;
      const uint32_t* tokens = (const uint32_t*)(packed + (block_start[g] + first) * block_elems);
      if (scale_in_tokens) {
        for (int64_t b = first; b < last; b++)
          pack_block(x_q, x_scale, w_scale + (e * n_blocks + nb) * k_blocks, 1.0f, starts[g] + b * 16, m - b * 16,
                     k, k_padded, rows, chunk_packed + (b - first) * block_elems / 2);
        tokens = chunk_packed;
      }
      const float* scales = w_scale + (e * n_blocks + nb) * k_blocks;
      float acc[4][16][16];
      for (int64_t row0 = nb * 128; row0 < n && row0 < nb * 128 + 128; row0 += STRIP_ROWS) {
        const int64_t strip_rows = n - row0 < STRIP_ROWS ? n - row0 : STRIP_ROWS;
        float* y_group = y + starts[g] * n;
        if (last - first <= 2) {
          /* Up to 32 tokens use each weight once: convert a slice of the strip and multiply it
             while it is in L1 (rows FUSED_COLUMNS apart: at the strip's full width, 32 rows would
             share too few L1 sets), so the conversion overlaps the tile multiplies. */
          const uint32_t* b1 = last - first == 2 ? tokens + block_elems / 2 : NULL;
          const int64_t toks = m - first * 16 < 16 * (last - first) ? m - first * 16 : 16 * (last - first);
          if (bits_only) {
            stream_strip(q + (e * n + row0) * k, strip_rows, k, k_padded, tokens, b1,
                         scale_mode == SCALE_SUMS ? scales : NULL, strip, acc);
            if (scale_mode == SCALE_SUMS) store_sums(y_group, n, row0, strip_rows, first * 16, toks, acc);
            else store_tiles(y_group, n, row0, strip_rows, first * 16, toks, out_factor);
            continue;
          }
          _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
          if (scale_mode == SCALE_SUMS) memset(acc, 0, sizeof acc);
          for (int64_t k0 = 0; k0 < k_padded; k0 += FUSED_COLUMNS) {
            const int64_t k1 = k0 + FUSED_COLUMNS < k_padded ? k0 + FUSED_COLUMNS : k_padded;
            convert_strip(q, w_scale, e, row0, n, k, k_padded, k0, k1, bits_only, strip, FUSED_COLUMNS);
            if (scale_mode == SCALE_SUMS) accumulate_scaled(strip, FUSED_COLUMNS, tokens, b1, k0, k1, scales, acc);
            else accumulate(strip, FUSED_COLUMNS, tokens, b1, k0, k1);
          }
          if (scale_mode == SCALE_SUMS) store_sums(y_group, n, row0, strip_rows, first * 16, toks, acc);
          else store_tiles(y_group, n, row0, strip_rows, first * 16, toks, out_factor);
          continue;
        }
        convert_strip(q, w_scale, e, row0, n, k, k_padded, 0, k_padded, bits_only, strip, k_padded);
        for (int64_t b = first; b < last; b += 2) {
          const uint32_t* b0 = tokens + (b - first) * block_elems / 2;
          const uint32_t* b1 = b + 1 < last ? b0 + block_elems / 2 : NULL;
          const int64_t width = b1 ? 32 : 16, toks = m - b * 16 < width ? m - b * 16 : width;
          if (scale_mode == SCALE_SUMS) {
            memset(acc, 0, sizeof acc);
            accumulate_scaled(strip, k_padded, b0, b1, 0, k_padded, scales, acc);
            store_sums(y_group, n, row0, strip_rows, b * 16, toks, acc);
          } else {
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            accumulate(strip, k_padded, b0, b1, 0, k_padded);
            store_tiles(y_group, n, row0, strip_rows, b * 16, toks, out_factor);
          }
        }
      }
    }
    _tile_release();
  }
  free(packed); free(scratch); free(block_start); free(item_start);
  return 0;
}
