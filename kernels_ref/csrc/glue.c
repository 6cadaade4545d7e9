/* The glue around the expert GEMMs, in plain C that the compiler vectorises for whatever ISA it is
   built for (AVX2, AVX-512, or none). See kernels_ref/native_cpu.py for how it is built and called.
   Every function takes pre-sized output buffers: allocating per call cost more than the work at
   decode sizes. `threads`: how many threads a call runs on; 1 runs on the caller's alone, without entering the
   OpenMP runtime. Where more pay is the caller's choice, measured or by size (kernels_ref.native_cpu.glue_threads,
   kernels_ref.glue_calls). `elapsed_ns`, where a kernel takes one and it is not NULL, receives the kernel's
   own time: see now_ns. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#else
#define omp_get_num_threads() 1
#endif

#define FP8_MAX 448.0f
#define AMAX_FLOOR 1e-4f
#define GROUP 128
/* `for (int64_t i = 0; i < n; i++) body` on `threads` threads, or on one as a plain loop that never enters the
   OpenMP runtime: after the benchmark's cache flush, entering it for a one-thread region cost 4.6 us, more than
   quantising a token takes once its data arrive. */
#define FOR_EACH(i, n, ...)                             \
  do {                                                  \
    if (threads > 1) {                                  \
      _Pragma("omp parallel for num_threads(threads)")  \
      for (int64_t i = 0; i < (n); i++) __VA_ARGS__     \
    } else {                                            \
      for (int64_t i = 0; i < (n); i++) __VA_ARGS__     \
    }                                                   \
  } while (0)

/* The monotonic clock in nanoseconds. A kernel that takes `elapsed_ns` reads it on entry and on return, so the
   time it reports is its own, from its first instruction to its last (cold caches and thread wake-ups
   included), as a GPU's events time a kernel on its stream: without the host's dispatch, which from Python
   cost more than the kernel at decode sizes (kernels_ref/timing.py). */
static int64_t now_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static inline uint32_t bits_of(float v) { uint32_t b; memcpy(&b, &v, 4); return b; }
static inline float float_of(uint32_t b) { float v; memcpy(&v, &b, 4); return v; }

/* |v| <= 448 -> its e4m3 code, rounded to nearest even as torch's .to(float8_e4m3fn) rounds.
   Normal results (|v| >= 2^-6): round the fp32 mantissa to 3 bits and move the exponent bias from
   127 to 7. Subnormal results: the multiple of 2^-9, rounded by adding 2^23 (code 8 is 2^-6, the
   smallest normal, which is also what the bits say). */
static inline uint8_t e4m3_of(float v) {
  const uint32_t b = bits_of(v), sign = (b >> 24) & 0x80u, a = b & 0x7FFFFFFFu;
  const uint32_t code_subnormal = bits_of(float_of(a) * 512.0f + 8388608.0f) - 0x4B000000u;
  const uint32_t code_normal = ((a + 0x7FFFFu + ((a >> 20) & 1u)) >> 20) - (120u << 3);
  return (uint8_t)((a < 0x3C800000u ? code_subnormal : code_normal) | sign);
}

static inline float float_at(const void* x, int x_is_bf16, int64_t i) {
  return x_is_bf16 ? float_of((uint32_t)((const uint16_t*)x)[i] << 16) : ((const float*)x)[i];
}

/* One group of len values -> codes and the group's scale: scale = max(amax, 1e-4) / 448,
   q = e4m3(clamp(x * (448 / amax'), +-448)), the arithmetic of
   kernels_ref.fp8.quantize_activation_groups in its order (448 / amax as torch computes a scalar
   over a tensor: a reciprocal, then a product). amax is taken on the bits: for finite floats the
   integer order is the float order. */
static void quantize_group_scalar(const void* x, int x_is_bf16, int64_t g0, int64_t len, uint8_t* q, float* scale) {
  uint32_t amax_bits = 0;
  for (int64_t i = 0; i < len; i++) {
    const uint32_t a = bits_of(float_at(x, x_is_bf16, g0 + i)) & 0x7FFFFFFFu;
    amax_bits = a > amax_bits ? a : amax_bits;
  }
  const float amax = float_of(amax_bits) > AMAX_FLOOR ? float_of(amax_bits) : AMAX_FLOOR;
  const float inverse = (1.0f / amax) * FP8_MAX;
  for (int64_t i = 0; i < len; i++) {
    float v = float_at(x, x_is_bf16, g0 + i) * inverse;
    v = v > FP8_MAX ? FP8_MAX : v < -FP8_MAX ? -FP8_MAX : v;
    q[g0 + i] = e4m3_of(v);
  }
  *scale = amax / FP8_MAX;
}

#ifdef __AVX512F__
#include <immintrin.h>
/* 16 values (fp32 bits, already times 448 / amax' as quantize_group_scalar computes them) -> their e4m3 codes
   in 16 int32 lanes: the arithmetic of e4m3_of, in fewer instructions (a multiply-add for the subnormal
   rounding, the normal exponent's rebias folded into the rounding add, the sign merged in one ternary logic op). */
static inline __m512i e4m3_codes(__m512 f) {
  f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(-FP8_MAX)), _mm512_set1_ps(FP8_MAX));
  const __m512i b = _mm512_castps_si512(f), a = _mm512_and_si512(b, _mm512_set1_epi32(0x7FFFFFFF));
  /* a * 512 is exact, so the fused multiply-add rounds a * 512 + 2^23 once, as the product then the sum did */
  const __m512 shifted = _mm512_fmadd_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(512.0f), _mm512_set1_ps(8388608.0f));
  const __m512i code_subnormal = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x4B000000));
  /* ((a + 0x7FFFF + lsb) >> 20) - (120 << 3), with the subtraction moved before the shift (exact for normal a) */
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(a, 20), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(_mm512_add_epi32(a, lsb), _mm512_set1_epi32(0x7FFFF - (120 << 23)));
  const __m512i code_normal = _mm512_srli_epi32(rounded, 20);
  const __mmask16 subnormal = _mm512_cmplt_epu32_mask(a, _mm512_set1_epi32(0x3C800000));
  const __m512i code = _mm512_mask_blend_epi32(subnormal, code_normal, code_subnormal);
  /* code | ((b >> 24) & 0x80): the sign */
  return _mm512_ternarylogic_epi32(code, _mm512_srli_epi32(b, 24), _mm512_set1_epi32(0x80), 0xF8);
}

/* 32 values (two registers of fp32 bits, already times 448 / amax' as quantize_group_scalar computes them) -> their
   e4m3 codes in 32 16-bit lanes, the first register's lanes then the second's: e4m3_codes' result in about half the
   instructions per value. Each product is rounded to float16 by round-to-odd (the conversion truncates, then the
   last bit is set where the 13 bits it dropped were not zero): float16 keeps 11 significant bits, at least 2 more than
   e4m3's 4, so rounding that to e4m3, to nearest even, gives what rounding the product once does (round-to-odd's
   double-rounding property), and that rounding is 16-bit integer arithmetic on 32 lanes at a time. A register pair
   with a value below e4m3's normal range (|v| < 2^-6, zero included: there float16 may drop more than those 13
   bits) takes e4m3_codes; in normalised activations that is rare. */
static inline __m512i e4m3_codes32(__m512 f0, __m512 f1) {
  const __m512i h = _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm512_cvt_roundps_ph(f0, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)),
      _mm512_cvt_roundps_ph(f1, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC), 1);
  const __m512i dropped_bits = _mm512_set1_epi32(0x1FFF);
  const __mmask32 inexact = _mm512_kunpackw(_mm512_test_epi32_mask(_mm512_castps_si512(f1), dropped_bits),
                                            _mm512_test_epi32_mask(_mm512_castps_si512(f0), dropped_bits));
  const __m512i odd = _mm512_mask_mov_epi16(h, inexact, _mm512_or_si512(h, _mm512_set1_epi16(1)));
  /* |value| at most 448 (448 * amax' / amax' may round a hair above it); a NaN becomes 448 with its sign, where
     e4m3_codes' clamp makes it -448 and torch's conversion NaN: no path is held to NaN inputs */
  const __m512i a = _mm512_min_epu16(_mm512_and_si512(odd, _mm512_set1_epi16(0x7FFF)), _mm512_set1_epi16(0x5F00));
  if (_mm512_cmplt_epu16_mask(a, _mm512_set1_epi16(0x2400)))
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(e4m3_codes(f0))),
                              _mm512_cvtepi32_epi16(e4m3_codes(f1)), 1);
  /* ((a + 0x3F + lsb) >> 7) - (8 << 3): the mantissa rounded to 3 bits, the exponent's bias moved from 15 to 7 */
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi16(a, 7), _mm512_set1_epi16(1));
  const __m512i code = _mm512_srli_epi16(_mm512_add_epi16(_mm512_add_epi16(a, lsb), _mm512_set1_epi16(0x3F - (8 << 10))), 7);
  /* code | ((h >> 8) & 0x80): the sign */
  return _mm512_ternarylogic_epi32(code, _mm512_srli_epi16(h, 8), _mm512_set1_epi16(0x80), 0xF8);
}

/* The bits of the largest |value| of a group of 128 (bf16: its 16 bits, compared as they are, for finite floats
   the integer order is the float order; shifted to fp32 bits). */
static inline uint32_t group_amax_bits(const void* x, int x_is_bf16, int64_t g0) {
  if (x_is_bf16) {
    __m512i vmax = _mm512_setzero_si512();
    for (int h = 0; h < 4; h++)
      vmax = _mm512_max_epu16(vmax, _mm512_and_si512(_mm512_loadu_si512((const uint16_t*)x + g0 + 32 * h),
                                                      _mm512_set1_epi16(0x7FFF)));
    return _mm512_reduce_max_epu32(_mm512_max_epu32(_mm512_srli_epi32(vmax, 16),
                                                    _mm512_and_si512(vmax, _mm512_set1_epi32(0xFFFF)))) << 16;
  }
  __m512i vmax = _mm512_setzero_si512();
  for (int j = 0; j < 8; j++)
    vmax = _mm512_max_epu32(vmax, _mm512_and_si512(_mm512_loadu_si512((const float*)x + g0 + 16 * j),
                                                   _mm512_set1_epi32(0x7FFFFFFF)));
  return _mm512_reduce_max_epu32(vmax);
}

/* The codes of a whole group of 128 given its 448 / amax': e4m3_codes32 on four register pairs. bf16 values widen by
   interleaving them with zeros (no shift); the lanes' order that leaves is undone on the 16-bit codes. */
static inline void group_codes(const void* x, int x_is_bf16, int64_t g0, float inverse_scale, uint8_t* q) {
  const __m512 inverse = _mm512_set1_ps(inverse_scale);
  /* bf16's pair holds elements {0-3, 8-11, 16-19, 24-27} then {4-7, ...} of its 32: element e is at
     4 (e / 8) + e % 8 + 12 (e % 8 >= 4); fp32's pair holds its 32 in order */
  static const uint16_t positions[32] = {0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23,
                                         8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31};
  for (int h = 0; h < 4; h++) {
    __m512i v0, v1;
    if (x_is_bf16) {
      const __m512i w = _mm512_loadu_si512((const uint16_t*)x + g0 + 32 * h);
      v0 = _mm512_unpacklo_epi16(_mm512_setzero_si512(), w);
      v1 = _mm512_unpackhi_epi16(_mm512_setzero_si512(), w);
    } else {
      v0 = _mm512_loadu_si512((const float*)x + g0 + 32 * h);
      v1 = _mm512_loadu_si512((const float*)x + g0 + 32 * h + 16);
    }
    __m512i codes = e4m3_codes32(_mm512_mul_ps(_mm512_castsi512_ps(v0), inverse),
                                 _mm512_mul_ps(_mm512_castsi512_ps(v1), inverse));
    if (x_is_bf16) codes = _mm512_permutexvar_epi16(_mm512_loadu_si512(positions), codes);
    _mm256_storeu_si256((__m256i*)(q + g0 + 32 * h), _mm512_cvtepi16_epi8(codes));
  }
}

/* A row, the arithmetic of quantize_group_scalar bit for bit (GCC vectorises the scalar form only partly: 0.9 ns per
   element against 0.1 here). The whole groups go ROW_GROUPS at a time: first every group's amax and scales, then
   every group's codes. A group's codes wait on its amax's reduction and two divisions, a chain of tens of cycles;
   group by group (amax, then codes) that chain set the pace, 38 ns a group on the Xeon (21 with the amax taken as
   given), where the amaxes alone overlap one another: 30 ns a group this way, warm. */
#define ROW_GROUPS 64
static void quantize_row(const void* x, int x_is_bf16, int64_t k, uint8_t* q, float* scale) {
  float inverse[ROW_GROUPS];
  int64_t g0 = 0;
  while (g0 + GROUP <= k) {
    const int64_t groups = (k - g0) / GROUP < ROW_GROUPS ? (k - g0) / GROUP : ROW_GROUPS;
    for (int64_t g = 0; g < groups; g++) {
      const float bits = float_of(group_amax_bits(x, x_is_bf16, g0 + g * GROUP));
      const float amax = bits > AMAX_FLOOR ? bits : AMAX_FLOOR;
      inverse[g] = (1.0f / amax) * FP8_MAX;
      scale[g0 / GROUP + g] = amax / FP8_MAX;
    }
    for (int64_t g = 0; g < groups; g++) group_codes(x, x_is_bf16, g0 + g * GROUP, inverse[g], q);
    g0 += groups * GROUP;
  }
  if (g0 < k) quantize_group_scalar(x, x_is_bf16, g0, k - g0, q, scale + g0 / GROUP);
}
#else
static void quantize_row(const void* x, int x_is_bf16, int64_t k, uint8_t* q, float* scale) {
  for (int64_t g0 = 0; g0 < k; g0 += GROUP)
    quantize_group_scalar(x, x_is_bf16, g0, k - g0 < GROUP ? k - g0 : GROUP, q, scale + g0 / GROUP);
}
#endif

/* x: [t][k] bf16 (x_is_bf16) or fp32 -> q: [t][k] e4m3 codes, scale: [t][ceil(k/128)] fp32. */
int quantize_fp8(const void* x, int x_is_bf16, int64_t t, int64_t k, uint8_t* q, float* scale, int threads,
                 int64_t* elapsed_ns) {
  const int64_t start = now_ns(), k_groups = (k + GROUP - 1) / GROUP, elem = x_is_bf16 ? 2 : 4;
  FOR_EACH(i, t,
           { quantize_row((const char*)x + i * k * elem, x_is_bf16, k, q + i * k, scale + i * k_groups); });
  if (elapsed_ns != NULL) *elapsed_ns = now_ns() - start;
  return 0;
}

/* SwiGLU and its quantisation in one pass: h = silu(gate) * up = gate / (1 + e^-gate) * up in fp32,
   then quantised as quantize_fp8 does. gate_up: [t][2 * inter] fp32 (gate columns first); q:
   [t][inter] e4m3 codes; scale: [t][ceil(inter / 128)]. In PyTorch this took four passes and
   three temporaries over the [t, 2 * inter] activations. */
int swiglu_quantize_fp8(const float* gate_up, int64_t t, int64_t inter, uint8_t* q, float* scale, int threads) {
  const int64_t k_groups = (inter + GROUP - 1) / GROUP;
  int failed = 0;
  #pragma omp parallel num_threads(threads) if (threads > 1)
  {
    float* h = malloc(inter * sizeof(float));
    if (h == NULL) failed = 1;
    #pragma omp for
    for (int64_t i = 0; i < t; i++) {
      if (h == NULL) continue;
      const float *gate = gate_up + i * 2 * inter, *up = gate + inter;
      for (int64_t c = 0; c < inter; c++) h[c] = gate[c] / (1.0f + expf(-gate[c])) * up[c];
      quantize_row(h, 0, inter, q + i * inter, scale + i * k_groups);
    }
    free(h);
  }
  return failed;
}

/* The dispatch permutation by a stable counting sort of the t * top_k slots by expert (slot =
   token * top_k + k): token_of_row [t * top_k], row_of_slot [t * top_k], counts [experts],
   offsets [experts + 1]. Returns 0, or 1 if an expert id is out of range.
   `counts` is the sort's cursor (no scratch to allocate): the second pass counts each expert's slots again as it
   places them, so it ends holding the counts. A decode step's plan is a few slots over hundreds of experts, and
   after the benchmark's cache flush its cost is the cold lines of counts and offsets: they are requested all at
   once, not one miss after another (on the 2-thread Xeon VM a cold miss cost 120-420 ns). */
int plan_dispatch(const int64_t* topk_ids, int64_t t, int64_t top_k, int64_t experts, int64_t* token_of_row,
                  int64_t* row_of_slot, int64_t* counts, int64_t* offsets) {
  const int64_t slots = t * top_k;
  for (int64_t b = 0; b < (experts + 1) * (int64_t)sizeof(int64_t); b += 64) {
    __builtin_prefetch((char*)offsets + b, 1, 3);
    if (b < experts * (int64_t)sizeof(int64_t)) __builtin_prefetch((char*)counts + b, 1, 3);
  }
  memset(counts, 0, experts * sizeof(int64_t));
  for (int64_t s = 0; s < slots; s++) {
    const int64_t e = topk_ids[s];
    if (e < 0 || e >= experts) return 1;
    counts[e]++;
  }
  offsets[0] = 0;
  for (int64_t e = 0; e < experts; e++) {
    offsets[e + 1] = offsets[e] + counts[e];
    counts[e] = 0;
  }
  for (int64_t s = 0; s < slots; s++) {
    const int64_t e = topk_ids[s], row = offsets[e] + counts[e]++;
    row_of_slot[s] = row;
    token_of_row[row] = s / top_k;
  }
  return 0;
}

/* bytes from src to dst; where dst and bytes are whole cache lines (and the build has SSE2), by non-temporal stores:
   they write whole lines without first reading them, where a plain store reads each cold line before writing it (a
   dispatch writes top_k copies of every token, so its writes are most of its traffic). The caller fences them
   (stream_fence) once it has issued all its rows: a fence per row waits for each row's lines to drain before the next
   row starts (a one-token dispatch of 8 rows took 7.0-7.3 us so against 5.9-6.7 us fenced once, cold, on the EPYC). */
static inline void copy_streaming(void* dst, const void* src, int64_t bytes) {
#ifdef __SSE2__
  if (((uintptr_t)dst | (uintptr_t)bytes) % 64 == 0) {
    for (int64_t b = 0; b < bytes; b += 64)
      for (int u = 0; u < 4; u++)
        _mm_stream_si128((__m128i*)((char*)dst + b) + u, _mm_loadu_si128((const __m128i*)((const char*)src + b) + u));
    return;
  }
#endif
  memcpy(dst, src, bytes);
}

/* The streamed lines of this thread are visible to whoever reads them next, on any thread. */
static inline void stream_fence(void) {
#ifdef __SSE2__
  _mm_sfence();
#endif
}

/* The least any glue kernel that reads read_bytes at src and writes write_bytes at dst can take: one pass over each and
   nothing computed (the input summed 8 bytes at a time, the output written with the sum's low byte by non-temporal
   stores, as the dispatch writes its rows). benchmarks/bench_cold_floor.py times it after the cache flush at the one-token glue shapes, where
   the cold lines, not the arithmetic, set the time. Returns the sum. */
uint64_t touch_bytes(const void* src, int64_t read_bytes, void* dst, int64_t write_bytes, int64_t* elapsed_ns) {
  const int64_t start = now_ns();
  uint64_t sum = 0;
  for (int64_t b = 0; b + 8 <= read_bytes; b += 8) {
    uint64_t word;
    memcpy(&word, (const char*)src + b, 8);
    sum += word;
  }
  int64_t b = 0;
#ifdef __SSE2__
  if ((uintptr_t)dst % 64 == 0) {
    const __m128i value = _mm_set1_epi8((char)(sum & 0xFF));
    for (; b + 64 <= write_bytes; b += 64)
      for (int u = 0; u < 4; u++) _mm_stream_si128((__m128i*)((char*)dst + b) + u, value);
    _mm_sfence();
  }
#endif
  memset((char*)dst + b, (int)(sum & 0xFF), write_bytes - b);
  if (elapsed_ns != NULL) *elapsed_ns = now_ns() - start;
  return sum;
}

/* dst[r] = src[index[r]] for rows of row_bytes bytes. */
void gather_rows(const void* src, int64_t row_bytes, const int64_t* index, int64_t rows, void* dst, int threads) {
  if (threads > 1) {
    #pragma omp parallel num_threads(threads)
    {
      #pragma omp for
      for (int64_t r = 0; r < rows; r++)
        copy_streaming((char*)dst + r * row_bytes, (const char*)src + index[r] * row_bytes, row_bytes);
      stream_fence();  /* each thread its own stores */
    }
    return;
  }
  for (int64_t r = 0; r < rows; r++)
    copy_streaming((char*)dst + r * row_bytes, (const char*)src + index[r] * row_bytes, row_bytes);
  stream_fence();
}

/* A layer's dispatch of fp8 tokens in one call: plan_dispatch, then gather_rows of the codes (q: [t][q_row_bytes])
   and of their scales (scale: [t][scale_row_bytes]) into q_out and scale_out ([t * top_k][...] each). Returns
   plan_dispatch's status (the gathers run only on 0). */
int dispatch_fp8(const int64_t* topk_ids, int64_t t, int64_t top_k, int64_t experts, const void* q,
                 int64_t q_row_bytes, const void* scale, int64_t scale_row_bytes, int64_t* token_of_row,
                 int64_t* row_of_slot, int64_t* counts, int64_t* offsets, void* q_out, void* scale_out, int threads,
                 int64_t* elapsed_ns) {
  const int64_t start = now_ns();
  const int status = plan_dispatch(topk_ids, t, top_k, experts, token_of_row, row_of_slot, counts, offsets);
  if (status == 0) {
    gather_rows(q, q_row_bytes, token_of_row, t * top_k, q_out, threads);
    gather_rows(scale, scale_row_bytes, token_of_row, t * top_k, scale_out, threads);
  }
  if (elapsed_ns != NULL) *elapsed_ns = now_ns() - start;
  return status;
}

/* 16 fp32 lanes in GCC's vector extension: one AVX-512 register, two AVX2 ones, or scalar code. */
typedef float v16 __attribute__((vector_size(64), aligned(4)));


typedef uint16_t u16x16 __attribute__((vector_size(32), aligned(2)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));
#define COMBINE_COLUMNS 64
/* Columns of a token per work item: a token's 28 KB of output in 7 items, so two threads share even one token. */
#define COMBINE_PART_COLUMNS 1024

/* 16 bf16 values (or fp32 ones) at p as 16 fp32 lanes. */
static inline v16 load16(const void* p, int is_bf16) {
  if (!is_bf16) return *(const v16*)p;
  const u32x16 bits = __builtin_convertvector(*(const u16x16*)p, u32x16) << 16;
  v16 f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* out[i][:] = sum over j < top_k of weights[i][j] * y[row_of_slot[i][j]][:], in fp32, j in order.
   y: [rows][d] bf16 (y_is_bf16) or fp32; out: [t][d] fp32. Each 64 columns of a token sum all top_k rows in
   registers before one store (adding row by row into `out` read and wrote it top_k times: 8 passes over a
   token's 28 KB); the same products in the same order, so the same sums. */
void combine_rows(const void* y, int y_is_bf16, const int64_t* row_of_slot, const float* weights, int64_t t,
                  int64_t top_k, int64_t d, float* out, int threads, int64_t* elapsed_ns) {
  const int64_t start = now_ns(), elem = y_is_bf16 ? 2 : 4, dv = d / COMBINE_COLUMNS * COMBINE_COLUMNS;
  /* parts of a token, for the threads; the last also takes the d % 64 columns */
  const int64_t parts = dv > 0 ? (dv + COMBINE_PART_COLUMNS - 1) / COMBINE_PART_COLUMNS : 1;
  FOR_EACH(item, t * parts, {
    const int64_t i = item / parts, part = item % parts;
    const int64_t c_end = (part + 1) * COMBINE_PART_COLUMNS < dv ? (part + 1) * COMBINE_PART_COLUMNS : dv;
    float* o = out + i * d;
    for (int64_t c0 = part * COMBINE_PART_COLUMNS; c0 < c_end; c0 += COMBINE_COLUMNS) {
      v16 acc[COMBINE_COLUMNS / 16] = {{0}};
      for (int64_t j = 0; j < top_k; j++) {
        const float w = weights[i * top_k + j];
        const char* row = (const char*)y + row_of_slot[i * top_k + j] * d * elem;
        for (int u = 0; u < COMBINE_COLUMNS / 16; u++) acc[u] += load16(row + (c0 + 16 * u) * elem, y_is_bf16) * w;
      }
      for (int u = 0; u < COMBINE_COLUMNS / 16; u++) memcpy(o + c0 + 16 * u, &acc[u], sizeof(v16));
    }
    if (dv < d && part == parts - 1) {  /* the last d % 64 columns, one at a time */
      memset(o + dv, 0, (d - dv) * sizeof(float));
      for (int64_t j = 0; j < top_k; j++) {
        const float w = weights[i * top_k + j];
        const int64_t row = row_of_slot[i * top_k + j];
        for (int64_t c = dv; c < d; c++) o[c] += float_at(y, y_is_bf16, row * d + c) * w;
      }
    }
  });
  if (elapsed_ns != NULL) *elapsed_ns = now_ns() - start;
}

/* The router GEMM on the weight as stored ([e][d]), for one or two tokens (a decode step's router reads each
   expert's row in one sequential pass) or where no packed weight is given (router_logits_packed below is the GEMM
   for more): a register tile of ROUTER_TILE_TOKENS tokens x ROUTER_TILE_EXPERTS experts, 24 accumulators of 16
   lanes plus 4 weight registers and one token register, within AVX-512's 32 (AVX2 and scalar builds spill, and
   stay correct), each accumulator's lanes summed at the end. */
#define ROUTER_TILE_TOKENS 6
#define ROUTER_TILE_EXPERTS 4
/* Columns per pass over the experts: the tile's token slice (6 x 2 KB) stays in L1 while all experts' slices
   stream from L2 (the fp32 router weight of one device, 32 x 7168 x 4 B = 0.9 MB, fits one core's L2). */
#define ROUTER_COLUMNS 512
/* Routers of up to this many tokens split the experts between the threads, larger ones the token tiles (see
   route_noaux_tc): at 64 tokens one thread's tiles already take 3 times as long as reading the weight. */
#define ROUTER_SPLIT_TOKENS 64

/* acc[j][i] += w[j][c0:c1] . x[i][c0:c1] in 16 lanes, for nt tokens (rows of x, fp32) and ROUTER_TILE_EXPERTS
   experts (w[j] for j < ROUTER_TILE_EXPERTS: rows of the fp32 weight). nt is a constant at each call site, so the
   loops unroll and the accumulators stay in registers. */
static inline __attribute__((always_inline)) void router_tile(const float* x, int64_t x_stride,
                                                              const float* const* w, int64_t c0, int64_t c1,
                                                              v16 (*acc)[ROUTER_TILE_TOKENS], const int nt) {
  v16 r[ROUTER_TILE_EXPERTS][ROUTER_TILE_TOKENS];
  for (int j = 0; j < ROUTER_TILE_EXPERTS; j++)
    for (int i = 0; i < nt; i++) r[j][i] = acc[j][i];
  for (int64_t c = c0; c < c1; c += 16) {
    v16 wv[ROUTER_TILE_EXPERTS];
    for (int j = 0; j < ROUTER_TILE_EXPERTS; j++) wv[j] = *(const v16*)(w[j] + c);
    for (int i = 0; i < nt; i++) {
      const v16 xv = *(const v16*)(x + i * x_stride + c);
      for (int j = 0; j < ROUTER_TILE_EXPERTS; j++) r[j][i] += xv * wv[j];
    }
  }
  for (int j = 0; j < ROUTER_TILE_EXPERTS; j++)
    for (int i = 0; i < nt; i++) acc[j][i] = r[j][i];
}

/* logits[i][j - e0] = x[i] . w[j] for the nt (1..ROUTER_TILE_TOKENS) rows of x (fp32, rows x_stride apart) and
   the experts e0 <= j < e1 of w ([e][d] fp32). A tile of one or two tokens (decode) reads whole rows: its x fits
   L1 as it is, and each expert's row then streams from memory in one sequential pass (32 rows read a slice at a
   time are 32 short streams: the cold 1-token router ran at 2.5 GB/s). acc: scratch of ROUTER_TILE_EXPERTS x
   ROUTER_TILE_TOKENS v16. */
static void router_logits(const float* x, int64_t x_stride, int64_t nt, const float* w, int64_t d, int64_t e0,
                          int64_t e1, v16 (*acc)[ROUTER_TILE_TOKENS], float* logits, int64_t logits_stride) {
  const int64_t dv = d / 16 * 16, columns = nt <= 2 ? (dv > 0 ? dv : 16) : ROUTER_COLUMNS;
  for (int64_t g = e0; g < e1; g += ROUTER_TILE_EXPERTS) {
    const float* rows[ROUTER_TILE_EXPERTS];
    for (int j = 0; j < ROUTER_TILE_EXPERTS; j++)  /* past e1: the last expert again, its sums discarded */
      rows[j] = w + (g + j < e1 ? g + j : e1 - 1) * d;
    memset(acc, 0, ROUTER_TILE_EXPERTS * sizeof *acc);
    for (int64_t c0 = 0; c0 < dv; c0 += columns) {
      const int64_t c1 = c0 + columns < dv ? c0 + columns : dv;
      switch (nt) {
        case 1: router_tile(x, x_stride, rows, c0, c1, acc, 1); break;
        case 2: router_tile(x, x_stride, rows, c0, c1, acc, 2); break;
        case 3: router_tile(x, x_stride, rows, c0, c1, acc, 3); break;
        case 4: router_tile(x, x_stride, rows, c0, c1, acc, 4); break;
        case 5: router_tile(x, x_stride, rows, c0, c1, acc, 5); break;
        default: router_tile(x, x_stride, rows, c0, c1, acc, ROUTER_TILE_TOKENS); break;
      }
    }
    for (int j = 0; j < ROUTER_TILE_EXPERTS && g + j < e1; j++)
      for (int64_t i = 0; i < nt; i++) {
        float sum = 0.0f;
        for (int l = 0; l < 16; l++) sum += acc[j][i][l];
        for (int64_t c = dv; c < d; c++) sum += x[i * x_stride + c] * rows[j][c];
        logits[i * logits_stride + g + j - e0] = sum;
      }
  }
}

/* e^x in fp32 for any x (clamped to [-87, 88], where e^x is a normal float), in code that vectorises: 2^n times
   Cephes' expf polynomial of x - n ln 2 (within 2 ulp of the exact value). The C library's expf is a call per
   element, which cost the router as much as its GEMM on the Xeon at 128 tokens and more (32 experts a token). */
static inline float exp_fast(float x) {
  x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  /* round to nearest: 1.5 * 2^23 */
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;              /* Cody-Waite: ln 2 in two parts */
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * float_of((uint32_t)((int32_t)n + 127) << 23);
}

/* Columns c0 <= c < c0 + columns of the tokens t0 <= i < t1 of x ([t][d] bf16 bits or fp32) as fp32 rows x_stride
   apart. */
static void widen_tokens(const void* x, int x_is_bf16, int64_t t0, int64_t t1, int64_t d, int64_t c0, int64_t columns,
                         float* xf, int64_t x_stride) {
  for (int64_t i = t0; i < t1; i++) {
    if (x_is_bf16) {
      const uint16_t* h = (const uint16_t*)x + i * d + c0;
      uint32_t* out = (uint32_t*)(xf + (i - t0) * x_stride);
      for (int64_t c = 0; c < columns; c++) out[c] = (uint32_t)h[c] << 16;
    } else {
      memcpy(xf + (i - t0) * x_stride, (const float*)x + i * d + c0, columns * sizeof(float));
    }
  }
}

/* The router GEMM on the weight packed as [ceil(e/16)][d][16] (16 experts' weights of one column side by side,
   experts past e zero: kernels_ref.moe_layer.Router.packed_weight, laid out once as an engine lays out its weights
   at load). A tile of up to ROUTER_PACKED_TOKENS tokens x 32 experts keeps 24 accumulators whose lanes are
   experts: each column loads two weight registers and broadcasts each token's value into two multiply-adds, with
   no horizontal sums. The row-major tile above reads 4 weight rows and 6 token rows per 24 multiply-adds and sums
   every accumulator's lanes at the end; on the 2-thread Xeon without AMX it ran 77-87 GFLOP/s against PyTorch's
   fp32 matmul at 214-272. The columns go ROUTER_PACKED_COLUMNS at a time: the tile's tokens are widened to fp32 one
   slice at a time (24 KB, in L1 while every expert block reads it), not whole (a decode step's 16 tokens widened
   whole wrote as many bytes as a thread's part of the weight), and the accumulators wait in memory between slices. */
#define ROUTER_PACKED_TOKENS 12
#define ROUTER_PACKED_COLUMNS 512
#define ROUTER_LANES 16
#define ROUTER_PREFETCH_COLUMNS 32

/* acc[b][i] += x[i][0:columns] . wp[b][0:columns] for the nt (1..ROUTER_PACKED_TOKENS) tokens of x (fp32 rows
   ROUTER_PACKED_COLUMNS apart) and nb (1 or 2) blocks of 16 experts, wp pointing at the first block's first column
   and the second block block_stride floats on. nt and nb are constants at each call site. */
static inline __attribute__((always_inline)) void router_packed_tile(const float* x, const float* wp,
                                                                     int64_t block_stride, int64_t columns,
                                                                     const int nt, const int nb,
                                                                     v16 (*acc)[ROUTER_PACKED_TOKENS]) {
  v16 r[2][ROUTER_PACKED_TOKENS];
  for (int b = 0; b < nb; b++)
    for (int i = 0; i < nt; i++) r[b][i] = acc[b][i];
  const float* wp1 = wp + block_stride;
  for (int64_t c = 0; c < columns; c++) {
    /* the weight streams from memory in a decode step: asked for 2 KB ahead (cold, 16 tokens on the Xeon: 139 us
       without, 113 with; 0.5 or 8 KB ahead: 131 and 118) */
    __builtin_prefetch(wp + (c + ROUTER_PREFETCH_COLUMNS) * ROUTER_LANES, 0, 3);
    if (nb == 2) __builtin_prefetch(wp1 + (c + ROUTER_PREFETCH_COLUMNS) * ROUTER_LANES, 0, 3);
    const v16 w0 = *(const v16*)(wp + c * ROUTER_LANES);
    const v16 w1 = nb == 2 ? *(const v16*)(wp1 + c * ROUTER_LANES) : w0;
    for (int i = 0; i < nt; i++) {
      const float xv = x[i * ROUTER_PACKED_COLUMNS + c];
      r[0][i] += w0 * xv;
      if (nb == 2) r[1][i] += w1 * xv;
    }
  }
  for (int b = 0; b < nb; b++)
    for (int i = 0; i < nt; i++) acc[b][i] = r[b][i];
}

#define ROUTER_PACKED_CASE(NT)                                                               \
  case NT:                                                                                   \
    if (nb == 2) router_packed_tile(xf, wp, d * ROUTER_LANES, columns, NT, 2, acc + b - b0);  \
    else router_packed_tile(xf, wp, d * ROUTER_LANES, columns, NT, 1, acc + b - b0);          \
    break;

/* logits[i][j - 16 b0] = x[t0 + i] . w[j] for the nt (1..ROUTER_PACKED_TOKENS) tokens from t0 of x ([t][d] bf16 bits
   or fp32) and the experts j < e of the blocks b0 <= b < b1 of the packed weight, two blocks at a time. xf: scratch
   of ROUTER_PACKED_TOKENS x ROUTER_PACKED_COLUMNS floats; acc: of (b1 - b0) x ROUTER_PACKED_TOKENS v16. */
static void router_logits_packed(const void* x, int x_is_bf16, int64_t t0, int64_t nt, const float* packed,
                                 int64_t d, int64_t e, int64_t b0, int64_t b1, float* xf,
                                 v16 (*acc)[ROUTER_PACKED_TOKENS], float* logits, int64_t logits_stride) {
  memset(acc, 0, (b1 - b0) * sizeof *acc);
  for (int64_t c0 = 0; c0 < d; c0 += ROUTER_PACKED_COLUMNS) {
    const int64_t columns = d - c0 < ROUTER_PACKED_COLUMNS ? d - c0 : ROUTER_PACKED_COLUMNS;
    widen_tokens(x, x_is_bf16, t0, t0 + nt, d, c0, columns, xf, ROUTER_PACKED_COLUMNS);
    for (int64_t b = b0; b < b1; b += 2) {
      const int nb = b1 - b < 2 ? 1 : 2;
      const float* wp = packed + (b * d + c0) * ROUTER_LANES;
      switch (nt) {
        ROUTER_PACKED_CASE(1) ROUTER_PACKED_CASE(2) ROUTER_PACKED_CASE(3) ROUTER_PACKED_CASE(4)
        ROUTER_PACKED_CASE(5) ROUTER_PACKED_CASE(6) ROUTER_PACKED_CASE(7) ROUTER_PACKED_CASE(8)
        ROUTER_PACKED_CASE(9) ROUTER_PACKED_CASE(10) ROUTER_PACKED_CASE(11)
        default:
          if (nb == 2) router_packed_tile(xf, wp, d * ROUTER_LANES, columns, ROUTER_PACKED_TOKENS, 2, acc + b - b0);
          else router_packed_tile(xf, wp, d * ROUTER_LANES, columns, ROUTER_PACKED_TOKENS, 1, acc + b - b0);
      }
    }
  }
  for (int64_t b = b0; b < b1; b++)
    for (int64_t i = 0; i < nt; i++)
      for (int l = 0; l < ROUTER_LANES && b * ROUTER_LANES + l < e; l++)
        logits[i * logits_stride + (b - b0) * ROUTER_LANES + l] = acc[b - b0][i][l];
}

/* sigmoid, then the top_k experts by score + bias (the lowest index first among equals), gates = their scores
   normalised to sum to 1, times scaling. logits: [e] (overwritten: the biased scores); score: [e] scratch.
   The top_k are kept sorted as the experts are read in order: most experts lose to the k-th best in one
   comparison (picking the best top_k times read all e experts each time); an expert enters after those it
   equals, so among equals the lower index stays first. */
static void route_token(float* logits, float* score, const float* bias, int64_t e, int64_t top_k, float scaling,
                        float* gate, int64_t* id) {
  for (int64_t j = 0; j < e; j++) {
    score[j] = 1.0f / (1.0f + exp_fast(-logits[j]));
    logits[j] = score[j] + bias[j];
  }
  int64_t kept = 0;
  for (int64_t c = 0; c < e; c++) {
    const float v = logits[c];
    if (kept == top_k && !(v > logits[id[top_k - 1]])) continue;
    int64_t p = kept < top_k ? kept++ : top_k - 1;
    for (; p > 0 && v > logits[id[p - 1]]; p--) id[p] = id[p - 1];
    id[p] = c;
  }
  float sum = 0.0f;
  for (int64_t k = 0; k < top_k; k++) {
    gate[k] = score[id[k]];
    sum += gate[k];
  }
  for (int64_t k = 0; k < top_k; k++) gate[k] = gate[k] / sum * scaling;
}

/* route_noaux_tc's arguments, and its [t][e] logits buffer. */
struct route_call {
  const void* x;
  int x_is_bf16;
  const float *w, *w_packed, *bias;
  int64_t t, d, e, top_k;
  float scaling;
  float* weights;
  int64_t* ids;
  float* logits;
};

/* One thread's share of a route_noaux_tc call: its GEMM work items, then its tokens (all of them outside a parallel
   region, which a one-thread call never enters: entering OpenMP's runtime cold cost 4.6 us). Returns 1 if out of
   memory. */
static int route_share(const struct route_call* c) {
  const int64_t t = c->t, d = c->d, e = c->e, x_stride = d + 16;  /* rows 4 KiB apart (d = 7168) would share L1 sets */
  /* a tile of one or two tokens streams the weight row by row (router_logits); larger ones take the packed GEMM */
  const int packed = c->w_packed != NULL && t > 2;
  const int64_t tile_tokens = packed ? ROUTER_PACKED_TOKENS : ROUTER_TILE_TOKENS;
  const int64_t unit = packed ? ROUTER_LANES : ROUTER_TILE_EXPERTS, units = (e + unit - 1) / unit;
  const int64_t tiles = (t + tile_tokens - 1) / tile_tokens;
  const int64_t split = t <= ROUTER_SPLIT_TOKENS ? omp_get_num_threads() : 1;  /* expert parts */
  /* scratch: the widened tokens (then route_token's scores) and the accumulators of either GEMM */
  const int64_t xf_floats = packed ? ROUTER_PACKED_TOKENS * ROUTER_PACKED_COLUMNS : ROUTER_TILE_TOKENS * x_stride;
  float* xf = malloc((xf_floats > e ? xf_floats : e) * sizeof(float));
  v16 (*acc)[ROUTER_PACKED_TOKENS] = malloc((units > ROUTER_TILE_EXPERTS ? units : ROUTER_TILE_EXPERTS) * sizeof *acc);
  #pragma omp for schedule(static)
  for (int64_t item = 0; item < tiles * split; item++) {
    if (xf == NULL || acc == NULL) continue;
    /* part-major: the static schedule gives each thread one part of the experts, for every tile */
    const int64_t part = item / tiles, t0 = item % tiles * tile_tokens;
    const int64_t t1 = t0 + tile_tokens < t ? t0 + tile_tokens : t;
    const int64_t u0 = units * part / split, u1 = units * (part + 1) / split;
    const int64_t e0 = u0 * unit, e1 = u1 * unit < e ? u1 * unit : e;
    if (e0 >= e1) continue;
    if (packed) {
      router_logits_packed(c->x, c->x_is_bf16, t0, t1 - t0, c->w_packed, d, e, u0, u1, xf, acc,
                           c->logits + t0 * e + e0, e);
    } else {
      widen_tokens(c->x, c->x_is_bf16, t0, t1, d, 0, d, xf, x_stride);
      router_logits(xf, x_stride, t1 - t0, c->w, d, e0, e1, (v16 (*)[ROUTER_TILE_TOKENS])acc, c->logits + t0 * e + e0, e);
    }
  }
  #pragma omp for schedule(static)
  for (int64_t i = 0; i < t; i++)
    if (xf != NULL)
      route_token(c->logits + i * e, xf, c->bias, e, c->top_k, c->scaling, c->weights + i * c->top_k, c->ids + i * c->top_k);
  const int failed = xf == NULL || acc == NULL;
  free(acc);
  free(xf);
  return failed;
}

/* DeepSeek-V3's noaux_tc routing in fp32: logits = x . w (x: [t][d] bf16 bits if x_is_bf16, else fp32; w: [e][d]
   fp32; w_packed: the same weight packed for router_logits_packed, or NULL), then route_token per token. weights: [t][top_k] fp32, ids: [t][top_k] int64, best first. Returns 0, or
   1 if out of memory.
   The threads split the experts up to ROUTER_SPLIT_TOKENS tokens (decode: each weight byte is read once, by one
   thread, where one core streams 6 to 10 GB/s and two nearly twice that; later tiles find the thread's part in
   its L2), the token tiles above (prefill: compute-bound, and each thread's copy of the weight stays in its L2).
   Either way the logits go to one [t][e] fp32 buffer, then the tokens are routed in parallel. */
int route_noaux_tc(const void* x, int x_is_bf16, const float* w, const float* w_packed, const float* bias, int64_t t,
                   int64_t d, int64_t e, int64_t top_k, float scaling, float* weights, int64_t* ids, int threads,
                   int64_t* elapsed_ns) {
  const int64_t start = now_ns();
  const struct route_call call = {x, x_is_bf16, w, w_packed, bias, t, d, e, top_k, scaling, weights, ids, malloc(t * e * sizeof(float))};
  if (call.logits == NULL) return 1;
  int failed = 0;
  if (threads > 1) {
    #pragma omp parallel num_threads(threads) reduction(|| : failed)
    failed = route_share(&call);
  } else {
    failed = route_share(&call);
  }
  free(call.logits);
  if (elapsed_ns != NULL) *elapsed_ns = now_ns() - start;
  return failed;
}
