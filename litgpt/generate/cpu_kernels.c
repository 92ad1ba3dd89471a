// CPU kernels for decode steps with bfloat16, int8 or int4 weights (see litgpt/generate/cpu.py, which builds and
// calls them).
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
//   Quantized weights (litgpt.quantization.portable, weight-only: activations stay bf16, sums in f32):
//   int8: W (N, K) int8 row-major, one bf16 scale per row: W[n, k] = q[n, k] * scales[n].
//   int4: PyTorch's CPU packing, described above `int4_block`, with bf16 (scale, zero) pairs per group.
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

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

static inline __m512 load_bf16x16(const bf16* p, __mmask16 mask) {  // 16 bf16 (masked: zeros) -> 16 f32
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p)), 16));
}


// ---------------------------------------------------------------------------------------------------------
// AMX (Intel's tile matrix unit), for linear layers over several rows: 16x16 fp32 tiles of W (16 rows x 32)
// times 32 x 16 activations. Linux hands the tile registers to a process only when asked (arch_prctl).

#ifndef AMX_MIN_ROWS
#define AMX_MIN_ROWS 4
#endif

#ifndef AMX_PREFETCH_BLOCKS
#define AMX_PREFETCH_BLOCKS 4
#endif

static int amx_ready = 0;

int lg_amx_init(void) {
  amx_ready = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
  return amx_ready;
}

typedef struct __attribute__((packed)) {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} TileConfig;

static void amx_begin(void) {  // per thread: tiles 0-2 of 16 rows x 64 bytes
  TileConfig cfg = {0};
  cfg.palette = 1;
  for (int t = 0; t < 3; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

// ---------------------------------------------------------------------------------------------------------
// One linear layer: its weights in one of the formats below, an optional f32 bias.

enum { W_BF16 = 0, W_INT8 = 1, W_INT4 = 2, W_INT4_ROWS = 3 };  // W_INT4_ROWS: portable int4, embeddings only

typedef struct {
  const void* w;        // bf16 (n, k) | int8 (n, k) | uint8 int4 codes (see int4_block / embed_row)
  const float* bias;    // (n,) or NULL
  int64_t n, k;
  int64_t kind;         // W_*
  const bf16* scales;   // int8: (n,); int4: (scale, zero) pairs, (kp / group, np, 2)
  int64_t group, kp, np;  // int4: group size, k and n padded (kp: to the group, np: to the 64-row blocks)
} Linear;

// ---------------------------------------------------------------------------------------------------------
// y[b, n] (+)= sum_k x[b, k] W[n, k] + bias[n], for MB rows of x at once and weight rows n0..n1.

#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 1536
#endif

// 32 weights of a row as bf16 pairs for dpbf16: bf16 as stored, or int8 widened exactly (|q| <= 127 is a bf16).
static inline __attribute__((always_inline)) __m512bh load_w32(const int kind, const void* W, int64_t i, __mmask32 m) {
  if (kind == W_BF16) return (__m512bh)_mm512_maskz_loadu_epi16(m, (const bf16*)W + i);
  const __m256i q = _mm256_maskz_loadu_epi8(m, (const int8_t*)W + i);
  const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q)));
  const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q, 1)));
  return _mm512_cvtne2ps_pbh(hi, lo);  // words 0-15 from lo, 16-31 from hi
}

// Row by row (bf16 or int8 weights): each weight row is read once for the MB rows of x; int8 rows are scaled
// once at the end (y = scale[n] * sum_k q[n, k] x[k]).
static inline __attribute__((always_inline)) void dot_rows(
    const int kind, const int MB, const bf16* x, int64_t ldx, int64_t K, const void* W, const bf16* scales,
    int64_t n0, int64_t n1, const float* bias, float* y, int64_t ldy, int accumulate) {
  const int64_t K32 = K & ~(int64_t)31, esize = kind == W_BF16 ? 2 : 1;
  const __mmask32 tail = (__mmask32)((1ull << (K - K32)) - 1);
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t row = n * K;
    const char* wbytes = (const char*)W + row * esize;
    __m512 acc[8], acc2 = _mm512_setzero_ps();
    for (int b = 0; b < MB; ++b) acc[b] = _mm512_setzero_ps();
    int64_t k = 0;
    if (MB == 1) {  // two independent sums: a single row has nothing else to overlap with
      for (; k + 64 <= K32; k += 64) {
        _mm_prefetch(wbytes + k * esize + PREFETCH_BYTES, _MM_HINT_T0);
        if (kind == W_BF16) _mm_prefetch(wbytes + k * esize + PREFETCH_BYTES + 64, _MM_HINT_T0);
        acc[0] = _mm512_dpbf16_ps(acc[0], load_w32(kind, W, row + k, ~0u), (__m512bh)_mm512_loadu_si512(x + k));
        acc2 = _mm512_dpbf16_ps(acc2, load_w32(kind, W, row + k + 32, ~0u), (__m512bh)_mm512_loadu_si512(x + k + 32));
      }
    }
    for (; k < K32; k += 32) {
      _mm_prefetch(wbytes + k * esize + PREFETCH_BYTES, _MM_HINT_T0);
      const __m512bh wv = load_w32(kind, W, row + k, ~0u);
      for (int b = 0; b < MB; ++b)
        acc[b] = _mm512_dpbf16_ps(acc[b], wv, (__m512bh)_mm512_loadu_si512(x + b * ldx + k));
    }
    if (tail) {
      const __m512bh wv = load_w32(kind, W, row + K32, tail);
      for (int b = 0; b < MB; ++b)
        acc[b] = _mm512_dpbf16_ps(acc[b], wv, (__m512bh)_mm512_maskz_loadu_epi16(tail, x + b * ldx + K32));
    }
    const float bn = bias ? bias[n] : 0.0f, sn = kind == W_INT8 ? bf2f(scales[n]) : 1.0f;
    if (MB == 1) acc[0] = _mm512_add_ps(acc[0], acc2);
    for (int b = 0; b < MB; ++b) {
      const float v = _mm512_reduce_add_ps(acc[b]) * sn + bn;
      float* out = y + b * ldy + n;
      *out = accumulate ? *out + v : v;
    }
  }
}

#ifndef ROW_BLOCK
#define ROW_BLOCK 16
#endif

#define DOT_CASES(KIND)                                                                          \
  switch (min64(8, B - b0)) {                                                                     \
    case 1: dot_rows(KIND, 1, xb, ldx, K, L->w, L->scales, n0, n1, L->bias, yb, ldy, accumulate); break; \
    case 2: dot_rows(KIND, 2, xb, ldx, K, L->w, L->scales, n0, n1, L->bias, yb, ldy, accumulate); break; \
    case 3: dot_rows(KIND, 3, xb, ldx, K, L->w, L->scales, n0, n1, L->bias, yb, ldy, accumulate); break; \
    case 4: dot_rows(KIND, 4, xb, ldx, K, L->w, L->scales, n0, n1, L->bias, yb, ldy, accumulate); break; \
    case 5: dot_rows(KIND, 5, xb, ldx, K, L->w, L->scales, n0, n1, L->bias, yb, ldy, accumulate); break; \
    case 6: dot_rows(KIND, 6, xb, ldx, K, L->w, L->scales, n0, n1, L->bias, yb, ldy, accumulate); break; \
    case 7: dot_rows(KIND, 7, xb, ldx, K, L->w, L->scales, n0, n1, L->bias, yb, ldy, accumulate); break; \
    default: dot_rows(KIND, 8, xb, ldx, K, L->w, L->scales, n0, n1, L->bias, yb, ldy, accumulate); break; \
  }

// Weight rows n0..n1 of a bf16 or int8 layer.
static inline void dot_block(const Linear* L, const bf16* x, int64_t B, int64_t ldx, float* y, int64_t ldy,
                             int accumulate, int64_t n0, int64_t n1) {
  const int64_t K = L->k;
  for (int64_t b0 = 0; b0 < B; b0 += 8) {  // the block's weights stay in L1 for the next 8 rows of x
    const bf16* xb = x + b0 * ldx;
    float* yb = y + b0 * ldy;
    if (L->kind == W_INT8) DOT_CASES(W_INT8) else DOT_CASES(W_BF16)
  }
}

// ---------------------------------------------------------------------------------------------------------
// int4 weights in PyTorch's CPU packing (torch._convert_weight_to_int4pack_for_cpu; litgpt.quantization.portable
// checks the layout in its self-test): the rows in blocks of 64 (np = n rounded up), a block is kp x 32 bytes,
//   byte [blk, k, j] = code(row 64 blk + j, col k) | code(row 64 blk + 32 + j, col k) << 4,
// a code c in 0..15 standing for (c - 8) * scale + zero, with the bf16 pair (scale, zero) of group g = k / group
// and row n at scales[(g * np + n) * 2]. Columns k, k + 1 of a block are one 64-byte cache line.
//
// Per block and pair of columns, 16 bytes of column k and 16 of column k + 1 widen to 16 dwords (k in the low
// half, k + 1 in the high half); the low (high) nibbles or-ed with 0x4300 are the bf16 pairs (128 + c_k,
// 128 + c_k+1), exact, for 16 rows: one dpbf16 against the broadcast pair x[k], x[k + 1] adds them up. At the
// end of a group, with xs = the group's sum of x (a dpbf16 against ones):
//   sum_k ((c - 8) * scale + zero) x[k] = scale * (acc - 136 xs) + zero * xs.
// Accumulators: 4 vectors (16 rows each) per row of x, up to 4 rows of x per pass over the block.

static inline __attribute__((always_inline)) void int4_block(
    const int MB, const Linear* L, const bf16* x, int64_t ldx, int64_t blk, float* y, int64_t ldy, int accumulate) {
  const int64_t K = L->k, G = L->group, Np = L->np;
  const uint8_t* wb = (const uint8_t*)L->w + blk * L->kp * 32;
  const __m512i nibbles = _mm512_set1_epi32(0x000F000F), offset = _mm512_set1_epi32(0x43004300);
  const __m512i high_words = _mm512_set1_epi32((int)0xFFFF0000u);
  const __m512bh ones = (__m512bh)_mm512_set1_epi32(0x3F803F80);
  float tot[4][64] __attribute__((aligned(64)));
  for (int b = 0; b < MB; ++b)
    for (int i = 0; i < 4; ++i) _mm512_store_ps(tot[b] + 16 * i, _mm512_setzero_ps());
  for (int64_t g0 = 0; g0 < K; g0 += G) {
    const int64_t g1 = min64(g0 + G, K);
    __m512 acc[4][4], xs[4];
    for (int b = 0; b < MB; ++b) {
      xs[b] = _mm512_setzero_ps();
      for (int i = 0; i < 4; ++i) acc[b][i] = _mm512_setzero_ps();
    }
    for (int64_t k = g0; k < g1; k += 2) {
      const uint8_t* p = wb + k * 32;
      _mm_prefetch((const char*)p + PREFETCH_BYTES, _MM_HINT_T0);
      // rows 0-15 | 32-47 (d0) and 16-31 | 48-63 (d1) of columns k (low half) and k + 1 (high half)
      const __m512i d0 = _mm512_or_si512(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)p)),
                                         _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(p + 32))), 16));
      const __m512i d1 = _mm512_or_si512(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(p + 16))),
                                         _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(p + 48))), 16));
      __m512bh w[4];  // rows 0-15, 16-31 (low nibbles), 32-47, 48-63 (high nibbles); 0xEA: (a & b) | c
      w[0] = (__m512bh)_mm512_ternarylogic_epi32(d0, nibbles, offset, 0xEA);
      w[1] = (__m512bh)_mm512_ternarylogic_epi32(d1, nibbles, offset, 0xEA);
      w[2] = (__m512bh)_mm512_ternarylogic_epi32(_mm512_srli_epi32(d0, 4), nibbles, offset, 0xEA);
      w[3] = (__m512bh)_mm512_ternarylogic_epi32(_mm512_srli_epi32(d1, 4), nibbles, offset, 0xEA);
      for (int b = 0; b < MB; ++b) {
        uint32_t pair;
        memcpy(&pair, x + b * ldx + k, sizeof pair);
        if (k + 1 == g1) pair &= 0xFFFFu;  // an odd last column: x[k + 1] is not part of the input
        const __m512bh xp = (__m512bh)_mm512_set1_epi32((int)pair);
        xs[b] = _mm512_dpbf16_ps(xs[b], ones, xp);
        for (int i = 0; i < 4; ++i) acc[b][i] = _mm512_dpbf16_ps(acc[b][i], w[i], xp);
      }
    }
    const int64_t g = g0 / G;
    for (int i = 0; i < 4; ++i) {  // acc[.][i] holds rows 16 i .. 16 i + 15 of the block
      const int64_t r = 16 * i;
      const __m512i sz = _mm512_loadu_si512(L->scales + (g * Np + blk * 64 + r) * 2);
      const __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(sz, 16));
      const __m512 zero = _mm512_castsi512_ps(_mm512_and_si512(sz, high_words));
      for (int b = 0; b < MB; ++b) {
        const __m512 sum = _mm512_fnmadd_ps(_mm512_set1_ps(136.0f), xs[b], acc[b][i]);
        const __m512 t = _mm512_fmadd_ps(zero, xs[b], _mm512_load_ps(tot[b] + r));
        _mm512_store_ps(tot[b] + r, _mm512_fmadd_ps(scale, sum, t));
      }
    }
  }
  const int64_t rows = min64(64, L->n - blk * 64);
  for (int b = 0; b < MB; ++b) {
    float* out = y + b * ldy + blk * 64;
    for (int64_t r = 0; r < rows; ++r) {
      const float v = tot[b][r] + (L->bias ? L->bias[blk * 64 + r] : 0.0f);
      out[r] = accumulate ? out[r] + v : v;
    }
  }
}

static void int4_rows(const Linear* L, const bf16* x, int64_t B, int64_t ldx, float* y, int64_t ldy, int accumulate) {
  const int64_t nblocks = (L->n + 63) / 64;
#pragma omp for schedule(static)
  for (int64_t blk = 0; blk < nblocks; ++blk)
    for (int64_t b0 = 0; b0 < B; b0 += 4) {  // the block stays in L1 / L2 for the next rows of x
      const bf16* xb = x + b0 * ldx;
      float* yb = y + b0 * ldy;
      switch (min64(4, B - b0)) {
        case 1: int4_block(1, L, xb, ldx, blk, yb, ldy, accumulate); break;
        case 2: int4_block(2, L, xb, ldx, blk, yb, ldy, accumulate); break;
        case 3: int4_block(3, L, xb, ldx, blk, yb, ldy, accumulate); break;
        default: int4_block(4, L, xb, ldx, blk, yb, ldy, accumulate); break;
      }
    }
}

// AMX: the rows of x in chunks of 16, packed as the tiles want them (pairs of k next to each other):
// pack[((c * K/32 + kb) * 16 + kp) * 32 + 2 m + j] = x[16 c + m, 32 kb + 2 kp + j], zero past row B.
static void amx_rows(const Linear* L, const bf16* x, int64_t B, int64_t ldx, float* y, int64_t ldy, int accumulate,
                     bf16* pack) {
  const int64_t K = L->k, N = L->n, KB = K / 32, chunks = (B + 15) / 16;
#pragma omp for schedule(static)
  for (int64_t t = 0; t < chunks * KB; ++t) {
    const int64_t c = t / KB, kb = t % KB;
    uint32_t* dst = (uint32_t*)(pack + t * 512);
    for (int64_t kp = 0; kp < 16; ++kp)
      for (int64_t m = 0; m < 16; ++m) {
        const int64_t row = 16 * c + m;
        uint32_t pair = 0u;
        if (row < B) memcpy(&pair, x + row * ldx + 32 * kb + 2 * kp, sizeof pair);
        dst[kp * 16 + m] = pair;
      }
  }  // implicit barrier: the packed rows are complete
  const int64_t nfull = N / 16;
#pragma omp for schedule(static) nowait
  for (int64_t nb = 0; nb < nfull; ++nb) {
    const bf16* w = (const bf16*)L->w + nb * 16 * K;
    for (int64_t c = 0; c < chunks; ++c) {
      float out[256] __attribute__((aligned(64)));
      _tile_zero(0);
      for (int64_t kb = 0; kb < KB; ++kb) {
        if (c == 0 && nb + AMX_PREFETCH_BLOCKS < nfull)  // rows ahead: the tile loads read 16 rows at once
          for (int r = 0; r < 16; ++r)
            _mm_prefetch((const char*)(w + (16 * AMX_PREFETCH_BLOCKS + r) * K + kb * 32), _MM_HINT_T0);
        _tile_loadd(1, w + kb * 32, K * 2);
        _tile_loadd(2, pack + (c * KB + kb) * 512, 64);
        _tile_dpbf16ps(0, 1, 2);
      }
      _tile_stored(0, out, 64);  // out[n * 16 + m]
      const int64_t rows = min64(16, B - 16 * c);
      for (int64_t m = 0; m < rows; ++m) {
        float* ym = y + (16 * c + m) * ldy + nb * 16;
        for (int64_t n = 0; n < 16; ++n) {
          const float v = out[n * 16 + m] + (L->bias ? L->bias[nb * 16 + n] : 0.0f);
          ym[n] = accumulate ? ym[n] + v : v;
        }
      }
    }
  }
#pragma omp single
  if (nfull * 16 < N) dot_block(L, x, B, ldx, y, ldy, accumulate, nfull * 16, N);  // the last rows of W
}

// Inside a parallel region (every thread calls it): y[b, n] (+)= x[b] . W[n] + bias[n] for b < B. With AMX
// initialised (lg_amx_init, and amx_begin in this thread), several rows and K a multiple of 32, the tile path;
// pack holds ceil(B / 16) * 16 * K bf16.
static void linear_rows(const Linear* L, const bf16* x, int64_t B, int64_t ldx, float* y, int64_t ldy,
                        int accumulate, bf16* pack) {
  if (L->kind == W_INT4) {
    int4_rows(L, x, B, ldx, y, ldy, accumulate);
    return;
  }
  if (L->kind == W_BF16 && amx_ready && pack && B >= AMX_MIN_ROWS && L->k % 32 == 0) {
    amx_rows(L, x, B, ldx, y, ldy, accumulate, pack);
    return;
  }
  const int64_t nblocks = (L->n + ROW_BLOCK - 1) / ROW_BLOCK;
#pragma omp for schedule(static)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t n0 = blk * ROW_BLOCK, n1 = min64(L->n, n0 + ROW_BLOCK);
    dot_block(L, x, B, ldx, y, ldy, accumulate, n0, n1);
  }
}

// y (B, ldy) f32 (+)= x (B, ldx) bf16 @ W (n, k)^T + bias: one linear layer on its own (tests, tools).
// pack: NULL, or ceil(B / 16) * 16 * k bf16 of room for the AMX path.
void lg_linear(const bf16* x, int64_t B, int64_t ldx, const bf16* w, int64_t n, int64_t k, const float* bias,
               float* y, int64_t ldy, int accumulate, bf16* pack) {
  const Linear L = {w, bias, n, k, W_BF16, 0, 0, 0, 0};
  const int amx = amx_ready && pack && B >= AMX_MIN_ROWS;
#pragma omp parallel
  {
    if (amx) amx_begin();
    linear_rows(&L, x, B, ldx, y, ldy, accumulate, pack);
    if (amx) _tile_release();
  }
}

// The same for a layer in any format (tests, tools): *L as NativeDecoder describes it.
void lg_qlinear(const bf16* x, int64_t B, int64_t ldx, const Linear* L, float* y, int64_t ldy, int accumulate,
                bf16* pack) {
  const int amx = amx_ready && pack && B >= AMX_MIN_ROWS && L->kind == W_BF16;
#pragma omp parallel
  {
    if (amx) amx_begin();
    linear_rows(L, x, B, ldx, y, ldy, accumulate, pack);
    if (amx) _tile_release();
  }
}

// Row `id` of an embedding table in any format, dequantized to f32 (k values).
static void embed_row(const Linear* E, int64_t id, float* out) {
  const int64_t K = E->k;
  if (E->kind == W_BF16) {
    const bf16* row = (const bf16*)E->w + id * K;
    for (int64_t i = 0; i < K; ++i) out[i] = bf2f(row[i]);
  } else if (E->kind == W_INT8) {
    const int8_t* row = (const int8_t*)E->w + id * K;
    const float s = bf2f(E->scales[id]);
    for (int64_t i = 0; i < K; ++i) out[i] = (float)row[i] * s;
  } else {  // int4: PyTorch's CPU packing (see int4_block) or the portable rows (two codes a byte, even column high)
    const uint8_t* w = (const uint8_t*)E->w;
    for (int64_t i = 0; i < K; ++i) {
      int c;
      if (E->kind == W_INT4) {
        const int64_t r = id % 64;
        const uint8_t byte = w[(id / 64) * E->kp * 32 + i * 32 + r % 32];
        c = r < 32 ? byte & 15 : byte >> 4;
      } else {
        const uint8_t byte = w[id * (E->kp / 2) + i / 2];
        c = i % 2 ? byte & 15 : byte >> 4;
      }
      const bf16* sz = E->scales + ((i / E->group) * E->np + id) * 2;
      out[i] = (float)(c - 8) * bf2f(sz[0]) + bf2f(sz[1]);
    }
  }
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
// before RoPE. Row b is the token at position p = pos[b] of the sequence in cache row crow[b]: its k, v go to
// that row's slot p (all rows first), then each query head attends to slots lo..p (lo = p - window + 1 with
// a sliding window). Several rows may be tokens of one sequence (a prompt). out (B, n_head * head_size) bf16.
// scratch: (threads) * slots floats.
static void attention_rows(const Attention* A, const float* qkv, int64_t B, int64_t ldq, const int64_t* pos,
                           const int64_t* crow, float* scratch, bf16* out) {
  const int64_t nh = A->n_head, ng = A->n_groups, hs = A->head_size, S = A->slots, nr = A->n_rope;
  const int64_t row_stride = ng * S * hs;
#pragma omp for schedule(static)
  for (int64_t t = 0; t < B * ng; ++t) {  // write the new keys and values
    const int64_t b = t / ng, g = t % ng, p = pos[b], r = crow[b];
    float kr[512];
    const float* k = qkv + b * ldq + (nh + g) * hs;
    const float* v = k + ng * hs;
    rope_head(k, kr, hs, nr, A->cos + p * nr, A->sin + p * nr);
    bf16* kd = A->k_cache + r * row_stride + (g * S + p) * hs;
    bf16* vd = A->v_cache + r * row_stride + (g * S + p) * hs;
    for (int64_t i = 0; i < hs; ++i) {
      kd[i] = f2bf(kr[i]);
      vd[i] = f2bf(v[i]);
    }
  }  // implicit barrier: every key is written before any head reads the cache
  const int64_t per_group = nh / ng, chunks = (hs + 15) / 16;
  const __mmask16 tail = (hs % 16) ? (__mmask16)((1u << (hs % 16)) - 1) : (__mmask16)0xffff;
  float* sc = scratch + (int64_t)omp_get_thread_num() * S;  // this thread's scores
#pragma omp for schedule(static)
  for (int64_t t = 0; t < B * nh; ++t) {
    const int64_t b = t / nh, h = t % nh, g = h / per_group, p = pos[b], r = crow[b];
    const int64_t lo = (A->window > 0 && p - A->window + 1 > 0) ? p - A->window + 1 : 0;
    float q[512] __attribute__((aligned(64))) = {0};
    __m512 acc[32];
    rope_head(qkv + b * ldq + h * hs, q, hs, nr, A->cos + p * nr, A->sin + p * nr);
    const bf16* kc = A->k_cache + r * row_stride + g * S * hs;
    const bf16* vc = A->v_cache + r * row_stride + g * S * hs;
    float mx = -INFINITY;
    for (int64_t j = lo; j <= p; ++j) {
      const bf16* kj = kc + j * hs;
      __m512 d = _mm512_setzero_ps();
      for (int64_t c = 0; c < chunks; ++c)
        d = _mm512_fmadd_ps(_mm512_load_ps(q + 16 * c), load_bf16x16(kj + 16 * c, c == chunks - 1 ? tail : 0xffff), d);
      float v = _mm512_reduce_add_ps(d) * A->scale;
      if (A->softcap > 0.0f) v = tanhf(v / A->softcap) * A->softcap;
      sc[j] = v;
      mx = v > mx ? v : mx;
    }
    float total = 0.0f;
    for (int64_t c = 0; c < chunks; ++c) acc[c] = _mm512_setzero_ps();
    for (int64_t j = lo; j <= p; ++j) {
      const float e = expf(sc[j] - mx);
      total += e;
      const __m512 ev = _mm512_set1_ps(e);
      const bf16* vj = vc + j * hs;
      for (int64_t c = 0; c < chunks; ++c)
        acc[c] = _mm512_fmadd_ps(ev, load_bf16x16(vj + 16 * c, c == chunks - 1 ? tail : 0xffff), acc[c]);
    }
    float o32[512] __attribute__((aligned(64)));
    const __m512 inv = _mm512_set1_ps(1.0f / total);
    for (int64_t c = 0; c < chunks; ++c) _mm512_store_ps(o32 + 16 * c, _mm512_mul_ps(acc[c], inv));
    bf16* o = out + b * nh * hs + h * hs;
    for (int64_t i = 0; i < hs; ++i) o[i] = f2bf(o32[i]);
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
  int64_t B, n_layer, n_embd, intermediate;
  const int64_t* ids;  // (B,) token ids
  const int64_t* pos;  // (B,) their positions
  const int64_t* crow; // (B,) their sequences' rows in the KV caches
  const int64_t* out_rows;  // (n_out,) the rows whose logits are wanted (the last token of each prompt)
  int64_t n_out;
  Linear wte;          // the token embedding (vocab, n_embd), in any format
  const bf16* wpe;     // (block_size, n_embd) learned positions, or NULL
  float embed_scale;
  const Layer* layers;
  Norm ln_f;
  Linear head;
  float* logits;       // (n_out, head.n)
  // work buffers
  float *x, *tmp, *qkv, *a, *scratch;  // x: the residual stream (B, n_embd)
  bf16 *h, *h2, *att, *m;
  bf16* pack;          // AMX packing room: ceil(B / 16) * 16 * (largest k) bf16, or NULL
  int64_t max_threads; // scratch holds max_threads * slots floats: the team is at most this large
} Step;

int64_t lg_step_size(void) { return (int64_t)sizeof(Step); }
int64_t lg_layer_size(void) { return (int64_t)sizeof(Layer); }

// Inside a parallel region: a norm of every row, the rows shared among the threads.
static void norm_all(const Norm* N, const float* x, int64_t B, int64_t C, bf16* out_bf, float* out_f) {
#pragma omp for schedule(static)
  for (int64_t b = 0; b < B; ++b) norm_rows(N, x + b * C, 1, C, out_bf ? out_bf + b * C : 0, out_f ? out_f + b * C : 0);
}

// x += post_norm(proj(src)), straight into the residual stream without a post norm.
static void residual(const Step* s, const Linear* proj, const bf16* src, int64_t has_post, const Norm* post) {
  const int64_t B = s->B, C = s->n_embd;
  if (!has_post) {
    linear_rows(proj, src, B, proj->k, s->x, C, 1, s->pack);
    return;
  }
  linear_rows(proj, src, B, proj->k, s->tmp, C, 0, s->pack);
  norm_all(post, s->tmp, B, C, 0, s->x);
}

void lg_decode(const Step* s) {
  const int64_t B = s->B, C = s->n_embd, I = s->intermediate;
  const int amx = amx_ready && s->pack && (B >= AMX_MIN_ROWS || s->n_out >= AMX_MIN_ROWS);
  const int threads = (int)min64(omp_get_max_threads(), s->max_threads);
#pragma omp parallel num_threads(threads)
  {
    if (amx) amx_begin();
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {  // embeddings
      float* xb = s->x + b * C;
      embed_row(&s->wte, s->ids[b], xb);
      const bf16* prow = s->wpe ? s->wpe + s->pos[b] * C : 0;
      for (int64_t i = 0; i < C; ++i) xb[i] = (xb[i] + (prow ? bf2f(prow[i]) : 0.0f)) * s->embed_scale;
    }
    for (int64_t l = 0; l < s->n_layer; ++l) {
      const Layer* L = s->layers + l;
      norm_all(&L->norm_1, s->x, B, C, s->h, 0);
      if (L->parallel_residual && !L->shared_norm) norm_all(&L->norm_2, s->x, B, C, s->h2, 0);
      const bf16* mlp_in = L->parallel_residual ? (L->shared_norm ? s->h : s->h2) : s->h;
      const int64_t ldq = L->qkv.n;
      linear_rows(&L->qkv, s->h, B, C, s->qkv, ldq, 0, s->pack);
      attention_rows(&L->attn, s->qkv, B, ldq, s->pos, s->crow, s->scratch, s->att);
      residual(s, &L->proj, s->att, L->has_post_attention, &L->post_attention);
      if (!L->parallel_residual) norm_all(&L->norm_2, s->x, B, C, s->h, 0);
      const int64_t lda = L->mlp_kind == MLP_GATED ? 2 * I : I;
      linear_rows(&L->fc_1, mlp_in, B, C, s->a, lda, 0, s->pack);
      if (L->mlp_kind == MLP_GATED) linear_rows(&L->fc_2, mlp_in, B, C, s->a + I, lda, 0, s->pack);
      act_rows(L->act, L->mlp_kind == MLP_GATED, s->a, B, I, lda, s->m);
      residual(s, &L->mlp_proj, s->m, L->has_post_mlp, &L->post_mlp);
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < s->n_out; ++i)  // only the rows whose logits are wanted
      norm_rows(&s->ln_f, s->x + s->out_rows[i] * C, 1, C, s->h + i * C, 0);
    linear_rows(&s->head, s->h, s->n_out, C, s->logits, s->head.n, 0, s->pack);
    if (amx) _tile_release();
  }
}
