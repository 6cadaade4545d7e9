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
/* below this many bytes of work a call runs on one thread: a parallel region on a shared
   2-core machine waits for the other thread's time slice (a 1-token matmul took 8 ms on 2 threads
   under load, 32 us on one) */
#define PARALLEL_BYTES (1 << 20)

static inline uint32_t bits_of(float v) { uint32_t b; memcpy(&b, &v, 4); return b; }
static inline float float_of(uint32_t b) { float v; memcpy(&v, &b, 4); return v; }

/* |v| <= 448 -> its e4m3 code, rounded to nearest even as torch's .to(float8_e4m3fn) rounds.
   Normal results (|v| >= 2^-6): round the fp32 mantissa to 3 bits and move the exponent bias from
   127 to 7. Subnormal results: the multiple of 2^-9, rounded by adding 2^23 (code 8 is 2^-6, the
   smallest normal, which is also what the bits say). Branch-free, so the loop vectorises. */
static inline uint8_t e4m3_of(float v) {
  const uint32_t b = bits_of(v), sign = (b >> 24) & 0x80u, a = b & 0x7FFFFFFFu;
  const uint32_t code_subnormal = bits_of(float_of(a) * 512.0f + 8388608.0f) - 0x4B000000u;
  const uint32_t code_normal = ((a + 0x7FFFFu + ((a >> 20) & 1u)) >> 20) - (120u << 3);
  return (uint8_t)((a < 0x3C800000u ? code_subnormal : code_normal) | sign);
}

/* One token's k values (bf16 bits or fp32) in groups of 128 -> e4m3 codes and one fp32 scale per
   group: scale = max(amax, 1e-4) / 448, q = e4m3(clamp(x * (448 / amax'), +-448)), the same
   arithmetic in the same order as kernels_ref.fp8.quantize_activation_groups. */
static void quantize_row(const void* x, int x_is_bf16, int64_t k, uint8_t* q, float* scale) {
  float row[GROUP];
  for (int64_t g0 = 0; g0 < k; g0 += GROUP) {
    const int64_t len = k - g0 < GROUP ? k - g0 : GROUP;
    if (x_is_bf16) {
      const uint16_t* h = (const uint16_t*)x + g0;
      for (int64_t i = 0; i < len; i++) row[i] = float_of((uint32_t)h[i] << 16);
    } else {
      memcpy(row, (const float*)x + g0, len * sizeof(float));
    }
    float amax = 0.0f;
    for (int64_t i = 0; i < len; i++) {
      const float a = fabsf(row[i]);
      amax = a > amax ? a : amax;
    }
    amax = amax > AMAX_FLOOR ? amax : AMAX_FLOOR;
    const float inverse = (1.0f / amax) * FP8_MAX;  /* torch's 448 / tensor: a reciprocal, then a product */
    for (int64_t i = 0; i < len; i++) {
      float v = row[i] * inverse;
      v = v > FP8_MAX ? FP8_MAX : v < -FP8_MAX ? -FP8_MAX : v;
      q[g0 + i] = e4m3_of(v);
    }
    scale[g0 / GROUP] = amax / FP8_MAX;
  }
}

/* x: [t][k] bf16 (x_is_bf16) or fp32 -> q: [t][k] e4m3 codes, scale: [t][ceil(k/128)] fp32. */
int quantize_fp8(const void* x, int x_is_bf16, int64_t t, int64_t k, uint8_t* q, float* scale, int threads) {
  const int64_t k_groups = (k + GROUP - 1) / GROUP, elem = x_is_bf16 ? 2 : 4;
  #pragma omp parallel for num_threads(threads) if (t * k * elem > PARALLEL_BYTES)
  for (int64_t i = 0; i < t; i++)
    quantize_row((const char*)x + i * k * elem, x_is_bf16, k, q + i * k, scale + i * k_groups);
  return 0;
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

/* Eight fp32 lanes x 2 (or one AVX-512 register): GCC's vector extension, lowered to whatever the
   build's ISA has. */
typedef float v16 __attribute__((vector_size(64), aligned(4)));
#define ROUTER_TOKENS 8

/* logits[i][j] = x[i] . w[j] for a block of up to ROUTER_TOKENS tokens (fp32, d a multiple of 16
   handled in vectors, the rest scalar): each weight row is loaded once per block. */
static void router_logits(const float* x, int64_t tokens, const float* w, int64_t e, int64_t d, float* logits) {
  const int64_t dv = d / 16 * 16;
  for (int64_t j = 0; j < e; j++) {
    v16 acc[ROUTER_TOKENS];
    for (int64_t i = 0; i < ROUTER_TOKENS; i++) acc[i] = (v16){0};
    const float* wj = w + j * d;
    for (int64_t c = 0; c < dv; c += 16) {
      const v16 wv = *(const v16*)(wj + c);
      for (int64_t i = 0; i < tokens; i++) acc[i] += *(const v16*)(x + i * d + c) * wv;
    }
    for (int64_t i = 0; i < tokens; i++) {
      float sum = 0.0f;
      for (int l = 0; l < 16; l++) sum += acc[i][l];
      for (int64_t c = dv; c < d; c++) sum += x[i * d + c] * wj[c];
      logits[i * e + j] = sum;
    }
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
  #pragma omp parallel num_threads(threads) if (t * e * d * 2 > PARALLEL_BYTES * 64)
  {
    float* xf = malloc((ROUTER_TOKENS * d + 3 * ROUTER_TOKENS * e) * sizeof(float));
    if (xf == NULL) failed = 1;
    #pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
      if (xf == NULL) continue;
      float *logits = xf + ROUTER_TOKENS * d, *score = logits + ROUTER_TOKENS * e, *biased = score + ROUTER_TOKENS * e;
      const int64_t t0 = b * ROUTER_TOKENS, tokens = t - t0 < ROUTER_TOKENS ? t - t0 : ROUTER_TOKENS;
      for (int64_t i = 0; i < tokens * d; i++)
        xf[i] = x_is_bf16 ? float_of((uint32_t)((const uint16_t*)x)[t0 * d + i] << 16) : ((const float*)x)[t0 * d + i];
      router_logits(xf, tokens, w, e, d, logits);
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
  }
  return failed;
}
