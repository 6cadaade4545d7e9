/* The glue around the expert GEMMs, in plain C that the compiler vectorises for whatever ISA it is
   built for (AVX2, AVX-512, or none). See kernels_ref/native_cpu.py for how it is built and called.
   Every function takes pre-sized output buffers: allocating per call cost more than the work at
   decode sizes. `threads` > 1 parallelises over tokens or rows where the work is large enough to
   pay for waking the threads. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FP8_MAX 448.0f
#define AMAX_FLOOR 1e-4f
#define GROUP 128
/* below this many bytes of work a call runs on one thread. A parallel region on a shared 2-core
   machine waits for the other thread's time slice: quantising 128 Kimi K2 tokens (2.8 MB) took
   0.49 ms on one thread and 8 ms on two while another process held the second core; one thread
   streams 6 to 10 GB/s, so two pay off only for work of tens of megabytes. */
#define PARALLEL_BYTES (1 << 25)

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
/* A whole group of 128 in eight AVX-512 registers: the same arithmetic as quantize_group_scalar
   (GCC vectorises the scalar form only partly: 0.9 ns per element against 0.1 here). */
static void quantize_group(const void* x, int x_is_bf16, int64_t g0, int64_t len, uint8_t* q, float* scale) {
  if (len != GROUP) {
    quantize_group_scalar(x, x_is_bf16, g0, len, q, scale);
    return;
  }
  __m512i v[8], vmax = _mm512_setzero_si512();
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  for (int j = 0; j < 8; j++) {
    v[j] = x_is_bf16 ? _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)((const uint16_t*)x + g0 + 16 * j))), 16)
                     : _mm512_loadu_si512((const float*)x + g0 + 16 * j);
    vmax = _mm512_max_epu32(vmax, _mm512_and_si512(v[j], abs_mask));
  }
  const uint32_t amax_bits = _mm512_reduce_max_epu32(vmax);
  const float amax = float_of(amax_bits) > AMAX_FLOOR ? float_of(amax_bits) : AMAX_FLOOR;
  const __m512 inverse = _mm512_set1_ps((1.0f / amax) * FP8_MAX);
  for (int j = 0; j < 8; j++) {
    __m512 f = _mm512_mul_ps(_mm512_castsi512_ps(v[j]), inverse);
    f = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(-FP8_MAX)), _mm512_set1_ps(FP8_MAX));
    const __m512i b = _mm512_castps_si512(f), a = _mm512_and_si512(b, abs_mask);
    const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(b, 24), _mm512_set1_epi32(0x80));
    const __m512 shifted = _mm512_add_ps(_mm512_mul_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(512.0f)), _mm512_set1_ps(8388608.0f));
    const __m512i code_subnormal = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x4B000000));
    const __m512i rounded = _mm512_add_epi32(_mm512_add_epi32(a, _mm512_set1_epi32(0x7FFFF)),
                                             _mm512_and_si512(_mm512_srli_epi32(a, 20), _mm512_set1_epi32(1)));
    const __m512i code_normal = _mm512_sub_epi32(_mm512_srli_epi32(rounded, 20), _mm512_set1_epi32(120 << 3));
    const __mmask16 subnormal = _mm512_cmplt_epu32_mask(a, _mm512_set1_epi32(0x3C800000));
    const __m512i code = _mm512_or_si512(_mm512_mask_blend_epi32(subnormal, code_normal, code_subnormal), sign);
    _mm_storeu_si128((__m128i*)(q + g0 + 16 * j), _mm512_cvtepi32_epi8(code));
  }
  *scale = amax / FP8_MAX;
}
#else
#define quantize_group quantize_group_scalar
#endif

static void quantize_row(const void* x, int x_is_bf16, int64_t k, uint8_t* q, float* scale) {
  for (int64_t g0 = 0; g0 < k; g0 += GROUP)
    quantize_group(x, x_is_bf16, g0, k - g0 < GROUP ? k - g0 : GROUP, q, scale + g0 / GROUP);
}

/* x: [t][k] bf16 (x_is_bf16) or fp32 -> q: [t][k] e4m3 codes, scale: [t][ceil(k/128)] fp32. */
int quantize_fp8(const void* x, int x_is_bf16, int64_t t, int64_t k, uint8_t* q, float* scale, int threads) {
  const int64_t k_groups = (k + GROUP - 1) / GROUP, elem = x_is_bf16 ? 2 : 4;
  #pragma omp parallel for num_threads(threads) if (t * k * elem > PARALLEL_BYTES)
  for (int64_t i = 0; i < t; i++)
    quantize_row((const char*)x + i * k * elem, x_is_bf16, k, q + i * k, scale + i * k_groups);
  return 0;
}

/* SwiGLU and its quantisation in one pass: h = silu(gate) * up = gate / (1 + e^-gate) * up in fp32,
   then quantised as quantize_fp8 does. gate_up: [t][2 * inter] fp32 (gate columns first); q:
   [t][inter] e4m3 codes; scale: [t][ceil(inter / 128)]. In PyTorch this took four passes and
   three temporaries over the [t, 2 * inter] activations. */
int swiglu_quantize_fp8(const float* gate_up, int64_t t, int64_t inter, uint8_t* q, float* scale, int threads) {
  const int64_t k_groups = (inter + GROUP - 1) / GROUP;
  int failed = 0;
  #pragma omp parallel num_threads(threads) if (t * inter * 8 > PARALLEL_BYTES)
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
   offsets [experts + 1]. Returns 0, 1 if an expert id is out of range, 2 if out of memory. */
int plan_dispatch(const int64_t* topk_ids, int64_t t, int64_t top_k, int64_t experts, int64_t* token_of_row,
                  int64_t* row_of_slot, int64_t* counts, int64_t* offsets) {
  const int64_t slots = t * top_k;
  memset(counts, 0, experts * sizeof(int64_t));
  for (int64_t s = 0; s < slots; s++) {
    const int64_t e = topk_ids[s];
    if (e < 0 || e >= experts) return 1;
    counts[e]++;
  }
  int64_t* cursor = malloc(experts * sizeof(int64_t));
  if (cursor == NULL) return 2;
  offsets[0] = 0;
  for (int64_t e = 0; e < experts; e++) cursor[e] = offsets[e + 1] = offsets[e] + counts[e];
  for (int64_t e = 0; e < experts; e++) cursor[e] = offsets[e];
  for (int64_t s = 0; s < slots; s++) {
    const int64_t row = cursor[topk_ids[s]]++;
    row_of_slot[s] = row;
    token_of_row[row] = s / top_k;
  }
  free(cursor);
  return 0;
}

/* dst[r] = src[index[r]] for rows of row_bytes bytes. */
void gather_rows(const void* src, int64_t row_bytes, const int64_t* index, int64_t rows, void* dst, int threads) {
  #pragma omp parallel for num_threads(threads) if (rows * row_bytes > PARALLEL_BYTES)
  for (int64_t r = 0; r < rows; r++)
    memcpy((char*)dst + r * row_bytes, (const char*)src + index[r] * row_bytes, row_bytes);
}

/* out[i][:] = sum over j < top_k of weights[i][j] * y[row_of_slot[i][j]][:], in fp32, j in order.
   y: [rows][d] bf16 (y_is_bf16) or fp32; out: [t][d] fp32. */
void combine_rows(const void* y, int y_is_bf16, const int64_t* row_of_slot, const float* weights, int64_t t,
                  int64_t top_k, int64_t d, float* out, int threads) {
  #pragma omp parallel for num_threads(threads) if (t * top_k * d * 2 > PARALLEL_BYTES)
  for (int64_t i = 0; i < t; i++) {
    float* o = out + i * d;
    memset(o, 0, d * sizeof(float));
    for (int64_t j = 0; j < top_k; j++) {
      const float w = weights[i * top_k + j];
      const int64_t row = row_of_slot[i * top_k + j];
      if (y_is_bf16) {
        const uint16_t* h = (const uint16_t*)y + row * d;
        for (int64_t c = 0; c < d; c++) o[c] += float_of((uint32_t)h[c] << 16) * w;
      } else {
        const float* f = (const float*)y + row * d;
        for (int64_t c = 0; c < d; c++) o[c] += f[c] * w;
      }
    }
  }
}

/* 16 fp32 lanes in GCC's vector extension: one AVX-512 register, two AVX2 ones, or scalar code. */
typedef float v16 __attribute__((vector_size(64), aligned(4)));
#define ROUTER_TOKENS 8

/* logits[i][j] = x[i] . w[j] for a block of ROUTER_TOKENS tokens (fp32; rows past the real tokens
   are zeros). Two experts at a time, so each load of x feeds two products, with constant loop
   bounds so the 16 accumulators stay in registers; over slices of ROUTER_COLUMNS columns, so the
   block's slice of x stays in L1 while the experts' rows stream from L2. acc: scratch of
   e x ROUTER_TOKENS v16 (the partial sums between slices). */
#define ROUTER_COLUMNS 512
static void router_logits(const float* x, int64_t x_stride, const float* w, int64_t e, int64_t d, v16* acc,
                          float* logits) {
  const int64_t dv = d / 16 * 16;
  for (int64_t j = 0; j < e * ROUTER_TOKENS; j++) acc[j] = (v16){0};
  for (int64_t c0 = 0; c0 < dv; c0 += ROUTER_COLUMNS) {
    const int64_t c1 = c0 + ROUTER_COLUMNS < dv ? c0 + ROUTER_COLUMNS : dv;
    for (int64_t j = 0; j < e; j += 2) {
      const float* w0 = w + j * d;
      const float* w1 = j + 1 < e ? w0 + d : w0;  /* an odd last expert is computed twice */
      v16* a0 = acc + j * ROUTER_TOKENS;
      v16* a1 = j + 1 < e ? a0 + ROUTER_TOKENS : a0;
      v16 r0[ROUTER_TOKENS], r1[ROUTER_TOKENS];
      for (int i = 0; i < ROUTER_TOKENS; i++) { r0[i] = a0[i]; r1[i] = a1[i]; }
      for (int64_t c = c0; c < c1; c += 16) {
        const v16 p = *(const v16*)(w0 + c), q = *(const v16*)(w1 + c);
        for (int i = 0; i < ROUTER_TOKENS; i++) {
          const v16 xv = *(const v16*)(x + i * x_stride + c);
          r0[i] += xv * p;
          r1[i] += xv * q;
        }
      }
      for (int i = 0; i < ROUTER_TOKENS; i++) { a1[i] = r1[i]; a0[i] = r0[i]; }
    }
  }
  for (int64_t j = 0; j < e; j++)
    for (int i = 0; i < ROUTER_TOKENS; i++) {
      float sum = 0.0f;
      for (int l = 0; l < 16; l++) sum += acc[j * ROUTER_TOKENS + i][l];
      for (int64_t c = dv; c < d; c++) sum += x[i * x_stride + c] * w[j * d + c];
      logits[i * e + j] = sum;
    }
}

/* DeepSeek-V3's noaux_tc routing in fp32: logits = x . w (x: [t][d] bf16 bits if x_is_bf16, else
   fp32; w: [e][d] fp32), scores = sigmoid(logits), the top_k experts by score + bias (the lowest
   index first among equals), gates = their scores normalised to sum to 1, times scaling.
   weights: [t][top_k] fp32, ids: [t][top_k] int64, best first. Returns 0, or 1 if out of memory. */
int route_noaux_tc(const void* x, int x_is_bf16, const float* w, const float* bias, int64_t t, int64_t d, int64_t e,
                   int64_t top_k, float scaling, float* weights, int64_t* ids, int threads) {
  const int64_t blocks = (t + ROUTER_TOKENS - 1) / ROUTER_TOKENS;
  int failed = 0;
  #pragma omp parallel num_threads(threads) if (t * e * d * 2 > PARALLEL_BYTES * 16)
  {
    v16* acc = malloc(e * ROUTER_TOKENS * sizeof(v16));
    const int64_t x_stride = d + 16;  /* rows 4 KiB apart (d = 7168) would share L1 sets */
    float* xf = malloc((ROUTER_TOKENS * x_stride + 3 * ROUTER_TOKENS * e) * sizeof(float));
    if (acc == NULL) failed = 1;
    if (xf == NULL) failed = 1;
    #pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
      if (xf == NULL || acc == NULL) continue;
      float *logits = xf + ROUTER_TOKENS * x_stride, *score = logits + ROUTER_TOKENS * e, *biased = score + ROUTER_TOKENS * e;
      const int64_t t0 = b * ROUTER_TOKENS, tokens = t - t0 < ROUTER_TOKENS ? t - t0 : ROUTER_TOKENS;
      memset(xf + tokens * x_stride, 0, (ROUTER_TOKENS - tokens) * x_stride * sizeof(float));
      for (int64_t i = 0; i < tokens; i++) {
        if (x_is_bf16) {
          const uint16_t* h = (const uint16_t*)x + (t0 + i) * d;
          uint32_t* out = (uint32_t*)(xf + i * x_stride);
          for (int64_t c = 0; c < d; c++) out[c] = (uint32_t)h[c] << 16;
        } else {
          memcpy(xf + i * x_stride, (const float*)x + (t0 + i) * d, d * sizeof(float));
        }
      }
      router_logits(xf, x_stride, w, e, d, acc, logits);
      for (int64_t i = 0; i < tokens; i++) {
        for (int64_t j = 0; j < e; j++) {
          score[i * e + j] = 1.0f / (1.0f + expf(-logits[i * e + j]));
          biased[i * e + j] = score[i * e + j] + bias[j];
        }
        float sum = 0.0f, *gate = weights + (t0 + i) * top_k;
        int64_t* id = ids + (t0 + i) * top_k;
        for (int64_t j = 0; j < top_k; j++) {
          int64_t best = -1;
          for (int64_t c = 0; c < e; c++)
            if (biased[i * e + c] != -INFINITY && (best < 0 || biased[i * e + c] > biased[i * e + best])) best = c;
          biased[i * e + best] = -INFINITY;
          id[j] = best;
          gate[j] = score[i * e + best];
          sum += gate[j];
        }
        for (int64_t j = 0; j < top_k; j++) gate[j] = gate[j] / sum * scaling;
      }
    }
    free(xf);
    free(acc);
  }
  return failed;
}
