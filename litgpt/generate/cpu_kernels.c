// CPU kernels for decode steps with bfloat16 weights (see litgpt/generate/cpu.py, which builds and calls them).
//
// A decode step multiplies every weight matrix by a few activation vectors (one per sequence of the batch):
// it is bound by how fast the weights stream from memory. These kernels read each weight row once for all
// rows of the batch (AVX512-BF16 dot products, software prefetch), keep the residual stream in float32,
// and fuse the small per-layer work (norms, RoPE, KV-cache write, attention over the cache, activations)
// into one call each, so that a step issues a handful of calls per layer instead of about a hundred
// PyTorch ops. Threads come from the OpenMP runtime PyTorch already loaded (torch.set_num_threads holds).
//
// Layouts (row-major, contiguous unless a leading dimension says otherwise):
//   weights W (N, K) bf16, activations x (B, K) bf16 with row stride ldx, outputs y (B, N) f32 with ldy,
//   KV caches (Bc, n_groups, S, head_size) bf16, RoPE tables (positions, n_rope) f32.
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <omp.h>

typedef uint16_t bf16;

static inline float bf2f(bf16 v) {
  union { uint32_t u; float f; } c;
  c.u = (uint32_t)v << 16;
  return c.f;
}

static inline bf16 f2bf(float f) {  // round to nearest even, like PyTorch
  union { uint32_t u; float f; } c;
  c.f = f;
  if ((c.u & 0x7fffffffu) > 0x7f800000u) return (bf16)((c.u >> 16) | 0x40);  // NaN stays NaN
  c.u += 0x7fffu + ((c.u >> 16) & 1u);
  return (bf16)(c.u >> 16);
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

int lg_abi_version(void) { return 1; }

// ---------------------------------------------------------------------------------------------------------
// y[b, n] (+)= sum_k x[b, k] W[n, k] + bias[n], for MB rows of x at once and weight rows n0..n1.

#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 1536
#endif

static inline __attribute__((always_inline)) void dot_rows(
    const int MB, const bf16* x, int64_t ldx, int64_t K, const bf16* W, int64_t n0, int64_t n1,
    const float* bias, float* y, int64_t ldy, int accumulate) {
  const int64_t K32 = K & ~(int64_t)31;
  const __mmask32 tail = (__mmask32)((1ull << (K - K32)) - 1);
  for (int64_t n = n0; n < n1; ++n) {
    const bf16* w = W + n * K;
    __m512 acc[8], acc2 = _mm512_setzero_ps();
    for (int b = 0; b < MB; ++b) acc[b] = _mm512_setzero_ps();
    int64_t k = 0;
    if (MB == 1) {  // two independent sums: a single row has nothing else to overlap with
      for (; k + 64 <= K32; k += 64) {
        _mm_prefetch((const char*)(w + k) + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char*)(w + k) + PREFETCH_BYTES + 64, _MM_HINT_T0);
        acc[0] = _mm512_dpbf16_ps(acc[0], (__m512bh)_mm512_loadu_si512(w + k), (__m512bh)_mm512_loadu_si512(x + k));
        acc2 = _mm512_dpbf16_ps(acc2, (__m512bh)_mm512_loadu_si512(w + k + 32), (__m512bh)_mm512_loadu_si512(x + k + 32));
      }
    }
    for (; k < K32; k += 32) {
      _mm_prefetch((const char*)(w + k) + PREFETCH_BYTES, _MM_HINT_T0);
      const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + k);
      for (int b = 0; b < MB; ++b)
        acc[b] = _mm512_dpbf16_ps(acc[b], wv, (__m512bh)_mm512_loadu_si512(x + b * ldx + k));
    }
    if (tail) {
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(tail, w + K32);
      for (int b = 0; b < MB; ++b)
        acc[b] = _mm512_dpbf16_ps(acc[b], wv, (__m512bh)_mm512_maskz_loadu_epi16(tail, x + b * ldx + K32));
    }
    const float bn = bias ? bias[n] : 0.0f;
    if (MB == 1) acc[0] = _mm512_add_ps(acc[0], acc2);
    for (int b = 0; b < MB; ++b) {
      const float v = _mm512_reduce_add_ps(acc[b]) + bn;
      float* out = y + b * ldy + n;
      *out = accumulate ? *out + v : v;
    }
  }
}

#ifndef ROW_BLOCK
#define ROW_BLOCK 16
#endif

typedef struct {
  const bf16* w;      // (n, k)
  const float* bias;  // (n,) or NULL
  int64_t n, k;
} Linear;

// Inside a parallel region (every thread calls it): y[b, col + n] (+)= x[b] . W[n] + bias[n] for b < B.
static void linear_rows(const Linear* L, const bf16* x, int64_t B, int64_t ldx, float* y, int64_t ldy,
                        int accumulate) {
  const int64_t nblocks = (L->n + ROW_BLOCK - 1) / ROW_BLOCK;
#pragma omp for schedule(static)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t n0 = blk * ROW_BLOCK, n1 = min64(L->n, n0 + ROW_BLOCK);
    for (int64_t b0 = 0; b0 < B; b0 += 8) {  // the block's weights stay in L1 for the next 8 rows of x
      const bf16* xb = x + b0 * ldx;
      float* yb = y + b0 * ldy;
      const bf16* W = L->w;
      const int64_t K = L->k;
      switch (min64(8, B - b0)) {
        case 1: dot_rows(1, xb, ldx, K, W, n0, n1, L->bias, yb, ldy, accumulate); break;
        case 2: dot_rows(2, xb, ldx, K, W, n0, n1, L->bias, yb, ldy, accumulate); break;
        case 3: dot_rows(3, xb, ldx, K, W, n0, n1, L->bias, yb, ldy, accumulate); break;
        case 4: dot_rows(4, xb, ldx, K, W, n0, n1, L->bias, yb, ldy, accumulate); break;
        case 5: dot_rows(5, xb, ldx, K, W, n0, n1, L->bias, yb, ldy, accumulate); break;
        case 6: dot_rows(6, xb, ldx, K, W, n0, n1, L->bias, yb, ldy, accumulate); break;
        case 7: dot_rows(7, xb, ldx, K, W, n0, n1, L->bias, yb, ldy, accumulate); break;
        default: dot_rows(8, xb, ldx, K, W, n0, n1, L->bias, yb, ldy, accumulate); break;
      }
    }
  }
}

// y (B, ldy) f32 (+)= x (B, ldx) bf16 @ W (n, k)^T + bias: one linear layer on its own (tests, tools).
void lg_linear(const bf16* x, int64_t B, int64_t ldx, const bf16* w, int64_t n, int64_t k, const float* bias,
               float* y, int64_t ldy, int accumulate) {
  const Linear L = {w, bias, n, k};
#pragma omp parallel
  linear_rows(&L, x, B, ldx, y, ldy, accumulate);
}

// ---------------------------------------------------------------------------------------------------------
// Norms over the rows of x (B, C) f32. The result goes to out_bf (bf16, the input of a linear layer) or,
// when out_bf is NULL, is added to out_f (a post-norm output joining the residual stream).

enum { NORM_RMS = 0, NORM_LAYER = 1, NORM_NONE = 2 };

typedef struct {
  int64_t kind, unit_offset;  // unit_offset: RMSNorm scales by (1 + weight) (Gemma)
  const float* weight;        // (C,) or NULL
  const float* bias;          // (C,) or NULL (LayerNorm)
  float eps;
} Norm;

static void norm_rows(const Norm* N, const float* x, int64_t B, int64_t C, bf16* out_bf, float* out_f) {
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x + b * C;
    float mean = 0.0f, scale = 1.0f;
    if (N->kind == NORM_RMS) {
      float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
      for (int64_t i = 0; i < C; ++i) ss += xb[i] * xb[i];
      scale = 1.0f / sqrtf(ss / (float)C + N->eps);
    } else if (N->kind == NORM_LAYER) {
      float s = 0.0f, ss = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < C; ++i) s += xb[i];
      mean = s / (float)C;
#pragma omp simd reduction(+ : ss)
      for (int64_t i = 0; i < C; ++i) ss += (xb[i] - mean) * (xb[i] - mean);
      scale = 1.0f / sqrtf(ss / (float)C + N->eps);
    }
    const float* w = N->kind == NORM_NONE ? 0 : N->weight;
    const float* bias = N->kind == NORM_NONE ? 0 : N->bias;
    for (int64_t i = 0; i < C; ++i) {
      float v = (xb[i] - mean) * scale;
      if (w) v *= N->unit_offset ? 1.0f + w[i] : w[i];
      if (bias) v += bias[i];
      if (out_bf) out_bf[b * C + i] = f2bf(v);
      else out_f[b * C + i] += v;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// MLP activation (inside a parallel region): out[b, i] = act(a[b, i]) (* a[b, I + i] for a gated MLP).

enum { ACT_SILU = 0, ACT_GELU = 1, ACT_GELU_TANH = 2 };

static void act_rows(int64_t act, int64_t glu, const float* a, int64_t B, int64_t I, int64_t lda, bf16* out) {
#pragma omp for schedule(static)
  for (int64_t t = 0; t < B * I; ++t) {
    const int64_t b = t / I, i = t % I;
    const float v = a[b * lda + i];
    float r;
    if (act == ACT_SILU) r = v / (1.0f + expf(-v));
    else if (act == ACT_GELU) r = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    else r = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    out[t] = f2bf(glu ? r * a[b * lda + I + i] : r);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Attention of one new token per row over the KV cache.

typedef struct {
  int64_t n_head, n_groups, head_size, n_rope;  // RoPE (rotate-half layout) on the first n_rope features
  int64_t slots;                                 // S, cache positions per row
  const float* cos;                              // (positions, n_rope) f32
  const float* sin;
  bf16* k_cache;                                 // (Bc, n_groups, S, head_size)
  bf16* v_cache;
  int64_t window;                                // sliding window (0 = none)
  float scale, softcap;                          // logits * scale, then softcap * tanh(. / softcap) if > 0
} Attention;

static inline void rope_head(const float* x, float* out, int64_t hs, int64_t n_rope, const float* c, const float* s) {
  const int64_t half = n_rope / 2;
  for (int64_t i = 0; i < half; ++i) {
    out[i] = x[i] * c[i] - x[i + half] * s[i];
    out[i + half] = x[i + half] * c[i + half] + x[i] * s[i + half];
  }
  for (int64_t i = n_rope; i < hs; ++i) out[i] = x[i];
}

// Inside a parallel region. qkv (B, ldq) f32: q (n_head heads), k, v (n_groups heads each) of the new tokens,
// before RoPE. Row b is at position p = pos[b * pos_stride]: its k, v go to cache slot p, then each query
// head attends to slots lo..p (lo = p - window + 1 with a sliding window). out (B, n_head * head_size) bf16.
// scratch: B * n_head * slots floats.
static void attention_rows(const Attention* A, const float* qkv, int64_t B, int64_t ldq, const int64_t* pos,
                           int64_t pos_stride, float* scratch, bf16* out) {
  const int64_t nh = A->n_head, ng = A->n_groups, hs = A->head_size, S = A->slots, nr = A->n_rope;
  const int64_t row_stride = ng * S * hs;
#pragma omp for schedule(static)
  for (int64_t t = 0; t < B * ng; ++t) {  // write the new keys and values
    const int64_t b = t / ng, g = t % ng, p = pos[b * pos_stride];
    float kr[512];
    const float* k = qkv + b * ldq + (nh + g) * hs;
    const float* v = k + ng * hs;
    rope_head(k, kr, hs, nr, A->cos + p * nr, A->sin + p * nr);
    bf16* kd = A->k_cache + b * row_stride + (g * S + p) * hs;
    bf16* vd = A->v_cache + b * row_stride + (g * S + p) * hs;
    for (int64_t i = 0; i < hs; ++i) {
      kd[i] = f2bf(kr[i]);
      vd[i] = f2bf(v[i]);
    }
  }  // implicit barrier: every key is written before any head reads the cache
  const int64_t per_group = nh / ng;
#pragma omp for schedule(static)
  for (int64_t t = 0; t < B * nh; ++t) {
    const int64_t b = t / nh, h = t % nh, g = h / per_group, p = pos[b * pos_stride];
    const int64_t lo = (A->window > 0 && p - A->window + 1 > 0) ? p - A->window + 1 : 0;
    float q[512], acc[512];
    rope_head(qkv + b * ldq + h * hs, q, hs, nr, A->cos + p * nr, A->sin + p * nr);
    const bf16* kc = A->k_cache + b * row_stride + g * S * hs;
    const bf16* vc = A->v_cache + b * row_stride + g * S * hs;
    float* sc = scratch + t * S;
    float mx = -INFINITY;
    for (int64_t j = lo; j <= p; ++j) {
      const bf16* kj = kc + j * hs;
      float d = 0.0f;
#pragma omp simd reduction(+ : d)
      for (int64_t i = 0; i < hs; ++i) d += q[i] * bf2f(kj[i]);
      d *= A->scale;
      if (A->softcap > 0.0f) d = tanhf(d / A->softcap) * A->softcap;
      sc[j] = d;
      mx = d > mx ? d : mx;
    }
    float total = 0.0f;
    for (int64_t i = 0; i < hs; ++i) acc[i] = 0.0f;
    for (int64_t j = lo; j <= p; ++j) {
      const float e = expf(sc[j] - mx);
      total += e;
      const bf16* vj = vc + j * hs;
#pragma omp simd
      for (int64_t i = 0; i < hs; ++i) acc[i] += e * bf2f(vj[i]);
    }
    bf16* o = out + b * nh * hs + h * hs;
    for (int64_t i = 0; i < hs; ++i) o[i] = f2bf(acc[i] / total);
  }
}

// ---------------------------------------------------------------------------------------------------------
// The decode step: every layer in one parallel region (no thread start-up or Python call per operation).

enum { MLP_PLAIN = 0, MLP_GATED = 1 };

typedef struct {
  Norm norm_1, norm_2;          // norm_2.kind == NORM_NONE with shared_norm: the MLP reads norm_1's output
  Norm post_attention, post_mlp;  // weight == NULL and kind == NORM_NONE: absent
  int64_t has_post_attention, has_post_mlp, parallel_residual, shared_norm;
  Linear qkv, proj, fc_1, fc_2, mlp_proj;  // fc_1 is the plain MLP's fc; fc_2 unused there
  int64_t mlp_kind, act;
  Attention attn;
} Layer;

typedef struct {
  int64_t B, pos_stride, n_layer, n_embd, intermediate;
  const int64_t* ids;  // (B,) token ids
  const int64_t* pos;  // positions: pos[b * pos_stride]
  const bf16* wte;     // (vocab, n_embd)
  const bf16* wpe;     // (block_size, n_embd) learned positions, or NULL
  float embed_scale;
  const Layer* layers;
  Norm ln_f;
  Linear head;
  float* logits;       // (B, head.n)
  // work buffers
  float *x, *tmp, *qkv, *a, *scratch;  // x: the residual stream (B, n_embd)
  bf16 *h, *h2, *att, *m;
} Step;

int64_t lg_step_size(void) { return (int64_t)sizeof(Step); }
int64_t lg_layer_size(void) { return (int64_t)sizeof(Layer); }

// x += post_norm(proj(src)), straight into the residual stream without a post norm.
static void residual(const Step* s, const Linear* proj, const bf16* src, int64_t has_post, const Norm* post) {
  const int64_t B = s->B, C = s->n_embd;
  if (!has_post) {
    linear_rows(proj, src, B, proj->k, s->x, C, 1);
    return;
  }
  linear_rows(proj, src, B, proj->k, s->tmp, C, 0);
#pragma omp single
  norm_rows(post, s->tmp, B, C, 0, s->x);
}

void lg_decode(const Step* s) {
  const int64_t B = s->B, C = s->n_embd, I = s->intermediate;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {  // embeddings
      const bf16* row = s->wte + s->ids[b] * C;
      const bf16* prow = s->wpe ? s->wpe + s->pos[b * s->pos_stride] * C : 0;
      for (int64_t i = 0; i < C; ++i) s->x[b * C + i] = (bf2f(row[i]) + (prow ? bf2f(prow[i]) : 0.0f)) * s->embed_scale;
    }
    for (int64_t l = 0; l < s->n_layer; ++l) {
      const Layer* L = s->layers + l;
#pragma omp single
      {
        norm_rows(&L->norm_1, s->x, B, C, s->h, 0);
        if (L->parallel_residual && !L->shared_norm) norm_rows(&L->norm_2, s->x, B, C, s->h2, 0);
      }
      const bf16* mlp_in = L->parallel_residual ? (L->shared_norm ? s->h : s->h2) : s->h;
      const int64_t ldq = L->qkv.n;
      linear_rows(&L->qkv, s->h, B, C, s->qkv, ldq, 0);
      attention_rows(&L->attn, s->qkv, B, ldq, s->pos, s->pos_stride, s->scratch, s->att);
      residual(s, &L->proj, s->att, L->has_post_attention, &L->post_attention);
      if (!L->parallel_residual) {
#pragma omp single
        norm_rows(&L->norm_2, s->x, B, C, s->h, 0);
      }
      const int64_t lda = L->mlp_kind == MLP_GATED ? 2 * I : I;
      linear_rows(&L->fc_1, mlp_in, B, C, s->a, lda, 0);
      if (L->mlp_kind == MLP_GATED) linear_rows(&L->fc_2, mlp_in, B, C, s->a + I, lda, 0);
      act_rows(L->act, L->mlp_kind == MLP_GATED, s->a, B, I, lda, s->m);
      residual(s, &L->mlp_proj, s->m, L->has_post_mlp, &L->post_mlp);
    }
#pragma omp single
    norm_rows(&s->ln_f, s->x, B, C, s->h, 0);
    linear_rows(&s->head, s->h, B, C, s->logits, s->head.n, 0);
  }
}
